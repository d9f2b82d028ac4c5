/* Starting the daemons a test drives: a child process whose output goes to a log file. */
#ifndef FC_TEST_PROC_H
#define FC_TEST_PROC_H

#include <fcntl.h>
#include <sys/types.h>
#include <unistd.h>

/* Starts argv[0] with argv, its stdout and stderr appended to log; the child's pid, or -1 if
 * fork failed. An exec failure shows as exit status 127. */
static inline pid_t test_spawn_logged(const char *log, char *const argv[]) {
  pid_t p = fork();
  if (p == 0) {
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd >= 0) dup2(fd, 2), dup2(fd, 1);
    execv(argv[0], argv);
    _exit(127);
  }
  return p;
}

#endif
