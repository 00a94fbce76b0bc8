/* instance.c - a child that talks to its parent in frames. The parent sends
 * "hello", "world", "yeah" and "stop"; the child prints each word with "!"
 * and answers "stop" with "ok, stopped", which the parent prints. Twice: the
 * child as a forked C function, then the same child in Python, handed to
 * python3 on its stdin as `code`. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "llll.h"

/* The child, in C: runs in a forked copy of this program. */
static int child(llll_sbc *ch, void *arg)
{
    (void)arg;
    llll_buf msg = LLLL_BUF_INIT;
    while (llll_sbc_recv(ch, &msg, -1) == 0) {
        if (msg.len == 4 && memcmp(msg.data, "stop", 4) == 0) {
            llll_sbc_send(ch, "ok, stopped", 11);
            break;
        }
        printf("%.*s!\n", (int)msg.len, (const char *)msg.data);
        fflush(stdout);
    }
    llll_buf_free(&msg);
    return 0;
}

/* The same child, in Python, standard library only. */
static const char child_py[] =
    "import os, socket, struct\n"
    "s = socket.socket(fileno=int(os.environ['LLLL_SBC_FD']))\n"
    "f = s.makefile('rb')\n"
    "while True:\n"
    "    head = f.read(4)\n"
    "    if len(head) < 4:\n"
    "        break\n"
    "    msg = f.read(struct.unpack('>I', head)[0]).decode()\n"
    "    if msg == 'stop':\n"
    "        reply = b'ok, stopped'\n"
    "        s.sendall(struct.pack('>I', len(reply)) + reply)\n"
    "        break\n"
    "    print(msg + '!', flush=True)\n";

static int talk(llll_instance *in, const char *who)
{
    const char *words[] = {"hello", "world", "yeah", "stop"};
    for (int i = 0; i < 4; i++) {
        int rc = llll_instance_send(in, words[i], strlen(words[i]));
        if (rc < 0) {
            fprintf(stderr, "instance: send: %s\n", llll_strerror(rc));
            return 1;
        }
    }
    llll_buf reply = LLLL_BUF_INIT;
    int rc = llll_instance_recv(in, &reply, 10000);
    if (rc < 0) {
        fprintf(stderr, "instance: recv: %s\n", llll_strerror(rc));
        return 1;
    }
    printf("parent got: %.*s\n", (int)reply.len, (const char *)reply.data);
    llll_buf_free(&reply);
    int status;
    llll_instance_join(in, -1, &status);
    printf("%s child exited with status %d\n", who, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    fflush(stdout);
    return 0;
}

int main(void)
{
    llll_instance *in;
    int rc = llll_instance_fork(&in, child, NULL, NULL);
    if (rc < 0) {
        fprintf(stderr, "instance: fork: %s\n", llll_strerror(rc));
        return 1;
    }
    int failed = talk(in, "forked C");
    llll_instance_free(in);

    const char *argv[] = {"python3", "-", NULL};
    llll_instance_opts opts = {.code = child_py};
    rc = llll_instance_start(&in, argv, &opts);
    if (rc == -ENOENT) {
        printf("python3 not found: skipping the Python child\n");
        return failed;
    }
    if (rc < 0) {
        fprintf(stderr, "instance: python3: %s\n", llll_strerror(rc));
        return 1;
    }
    failed |= talk(in, "Python");
    llll_instance_free(in);
    return failed;
}
