/* hello-wagi: the seed talk's hello program, plus the CGI header lines.
 * A plain WASI command: whatever it prints is the HTTP response. */
#include <stdio.h>

int main(void) {
    printf("Content-Type: text/plain\n\n");
    printf("Hello, world!\n");
    return 0;
}
