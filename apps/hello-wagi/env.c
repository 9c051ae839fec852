/* wagi-env: answers with its CGI environment, argv and stdin as JSON. */
#include <stdio.h>
#include <string.h>

extern char **environ;

static void json_string(const char *s, size_t n) {
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20 || c >= 0x7f) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

int main(int argc, char **argv) {
    static char body[1 << 20];
    size_t len = fread(body, 1, sizeof body, stdin);

    printf("Content-Type: application/json\n\n{\"env\": {");
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq) continue;
        if (e != environ) printf(", ");
        json_string(*e, (size_t)(eq - *e));
        printf(": ");
        json_string(eq + 1, strlen(eq + 1));
    }
    printf("}, \"argv\": [");
    for (int i = 0; i < argc; i++) {
        if (i) printf(", ");
        json_string(argv[i], strlen(argv[i]));
    }
    printf("], \"stdin\": ");
    json_string(body, len);
    printf("}\n");
    return 0;
}
