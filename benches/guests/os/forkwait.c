/*
 * forkwait: n times fork() a child that exits at once, and wait for it.
 * Process creation and teardown: a new address space, copy-on-write
 * faults, two context switches.
 */
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../bench.h"

const char bench_name[] = "forkwait";
const unsigned bench_default_n = 4000;

unsigned bench_run(unsigned n)
{
    unsigned ok = 0;
    for (unsigned i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0)
            break;
        if (pid == 0)
            _exit(7);
        int status;
        if (waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 7)
            ok++;
    }
    return ok;
}
