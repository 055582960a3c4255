/* C ABI smoke test: one process forks; the child connects and echoes, the parent listens,
 * sends with copy and zero copy, checks the echoes, then sees the child's death. */
#include "rcrun_shm.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHECK(c, ...) do { if (!(c)) { fprintf(stderr, __VA_ARGS__); fprintf(stderr, " (%s)\n", rcrun_shm_last_error()); return 1; } } while (0)

static int child(const char *path) {
    rcrun_shm *ch = rcrun_shm_connect(path, 0, 5000);
    if (!ch) { fprintf(stderr, "connect: %s\n", rcrun_shm_last_error()); _exit(2); }
    char buf[4096];
    for (;;) {
        ssize_t n = rcrun_shm_recv(ch, buf, sizeof buf);
        if (n < 0) _exit(n == RCRUN_SHM_EPEER_CLOSED ? 0 : 3);
        if (n == 3 && memcmp(buf, "die", 3) == 0) { kill(getpid(), SIGKILL); }
        if (rcrun_shm_send(ch, buf, (size_t)n) != 0) _exit(4);
    }
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: smoke REGION\n"); return 1; }
    const char *path = argv[1];
    CHECK(rcrun_shm_create_region(path, 65536, -1, 0600) == 0, "create_region");
    CHECK(rcrun_shm_create_region(path, 65536, -1, 0600) == RCRUN_SHM_EIO, "second create must fail");
    pid_t pid = fork();
    if (pid == 0) return child(path);
    rcrun_shm *ch = rcrun_shm_listen(path, 20, 5000);
    CHECK(ch != NULL, "listen");
    CHECK(rcrun_shm_max_frame(ch) == 65536 / 2 - 8, "max_frame %zu", rcrun_shm_max_frame(ch));
    char buf[4096];
    for (int i = 0; i < 1000; i++) {
        int len = snprintf(buf, sizeof buf, "message %d", i);
        CHECK(rcrun_shm_send(ch, buf, (size_t)len) == 0, "send %d", i);
        char back[64];
        ssize_t n = rcrun_shm_recv(ch, back, sizeof back);
        CHECK(n == len && memcmp(back, buf, (size_t)len) == 0, "echo %d: %zd", i, n);
    }
    char *w = rcrun_shm_reserve(ch, 1000);
    CHECK(w != NULL, "reserve");
    memset(w, 'z', 100);
    CHECK(rcrun_shm_commit(ch, 100) == 0, "commit");
    CHECK(rcrun_shm_commit(ch, 100) == RCRUN_SHM_ESTATE, "commit twice must fail");
    size_t len = 0;
    int more = -1;
    const char *r = rcrun_shm_recv_ref(ch, &len, &more);
    CHECK(r != NULL && len == 100 && more == 0 && r[0] == 'z' && r[99] == 'z', "recv_ref");
    CHECK(rcrun_shm_release(ch) == 0, "release");
    CHECK(rcrun_shm_reserve(ch, 1 << 20) == NULL, "oversized reserve must fail");
    CHECK(rcrun_shm_send(ch, "die", 3) == 0, "send die");
    ssize_t n = rcrun_shm_recv(ch, buf, sizeof buf);
    CHECK(n == RCRUN_SHM_EPEER_DIED, "expected peer died, got %zd", n);
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "child status %d", st);
    rcrun_shm_close(ch);
    unlink(path);
    printf("c-abi ok\n");
    return 0;
}
