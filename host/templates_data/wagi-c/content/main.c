/* A WAGI program: a plain WASI command. The request arrives as CGI variables
 * (REQUEST_METHOD, PATH_INFO, QUERY_STRING, HTTP_* headers: getenv) and the body
 * on stdin; what it prints is the response: header lines, an empty line, the body. */
#include <stdio.h>

int main(void) {
    printf("Content-Type: text/plain\n\n");
    printf("Hello from C!\n");
    return 0;
}
