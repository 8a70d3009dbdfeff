/* Shows whether qemu-user reports a failed exec through posix_spawn(3).
 * scripts/pi-test builds it for the target and runs it under the emulator:
 * qemu-user (7.2, Debian 12) runs glibc's CLONE_VM|CLONE_VFORK child as a
 * plain fork, so the exec error the child writes into shared memory never
 * reaches the parent; posix_spawn succeeds and the child exits 127. Rust's
 * std::process::Command spawns through posix_spawn, so under that emulator
 * a missing program looks like one that ran and failed. The tests that
 * assert "missing program" states are skipped where this exits 1, and
 * run where it exits 0 (a real Pi, or an emulator that is fixed). */
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
extern char **environ;
int main(void) {
    pid_t pid;
    char *argv[] = {"/nonexistent/vcgencmd", NULL};
    int rc = posix_spawn(&pid, argv[0], NULL, NULL, argv, environ);
    if (rc != 0) { printf("posix_spawn: %s (the error is reported)\n", strerror(rc)); return 0; }
    int status; waitpid(pid, &status, 0);
    printf("posix_spawn succeeded; the child exited %d (the error is lost)\n", WEXITSTATUS(status));
    return 1;
}
