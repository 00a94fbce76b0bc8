/* Prints the fds open in this process, "0 1 2\n" say (the listing's own fd
 * left out), for the fd-hygiene tests. */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>

int main(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 2;
    int fds[256], n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        if (fd != dirfd(d) && n < 256)
            fds[n++] = fd;
    }
    closedir(d);
    /* readdir order is ascending on procfs; sort anyway. */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && fds[j - 1] > fds[j]; j--) {
            int t = fds[j];
            fds[j] = fds[j - 1];
            fds[j - 1] = t;
        }
    for (int i = 0; i < n; i++)
        printf(i ? " %d" : "%d", fds[i]);
    printf("\n");
    return 0;
}
