/* Writes its argument to stdout one byte per write(2), with a short pause
 * between bytes so the reader sees them in many small reads. */
#define _GNU_SOURCE
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    struct timespec pause = {0, 200 * 1000};
    for (const char *c = argv[1]; *c; c++) {
        if (write(1, c, 1) != 1)
            return 1;
        nanosleep(&pause, NULL);
    }
    return 0;
}
