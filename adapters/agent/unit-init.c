/*
 * ckpt-unit-init: the first process of every job unit, so that a unit is always ONE process tree.
 *
 *   ckpt-unit-init COMMAND [ARGS...]      (fd 3: the launcher's gate; fd 4, optional: status pipe)
 *
 * CRIU dumps one tree per call. A double-forked daemon would be re-parented to PID 1 and leave
 * the command's tree; as a child subreaper this init adopts it instead, so `criu dump -t INIT`
 * captures every process of the unit, and a restore brings every escapee back with it.
 *
 * 1. PR_SET_CHILD_SUBREAPER; wait for "go" on fd 3 (EOF without it: exit 125, nothing runs);
 * 2. close every descriptor above 2 except the status pipe (CRIU cannot dump what leads outside);
 * 3. fork the command (signal dispositions reset, exec'd in place of the child);
 * 4. reap every descendant. When the command ends, write "exit N" or "signal N" to fd 4 (the
 *    foreground `ckpt run` returns then), and let go of the caller's stdio so a lingering daemon
 *    does not hold the caller's pipes open;
 * 5. when no descendant is left, end the way the command ended (same exit status or signal).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define GATE_FD 3
#define STATUS_FD 4

static void close_fds_above(int keep) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return;
  int self = dirfd(d);
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    int fd = atoi(e->d_name);
    if (fd > 2 && fd != self && fd != keep) close(fd);
  }
  closedir(d);
}

static int wait_for_go(void) {
  char buf[8];
  size_t n = 0;
  while (n < sizeof buf) {
    ssize_t r = read(GATE_FD, buf + n, 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return 0;
    if (buf[n] == '\n') return n == 2 && memcmp(buf, "go", 2) == 0;
    n++;
  }
  return 0;
}

static void detach_stdio(void) {
  int null = open("/dev/null", O_RDWR);
  if (null < 0) return;
  for (int fd = 0; fd <= 2; fd++) dup2(null, fd);
  if (null > 2) close(null);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: ckpt-unit-init COMMAND [ARGS...] (started by ckpt run)\n");
    return 125;
  }
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
    perror("ckpt-unit-init: PR_SET_CHILD_SUBREAPER");
    return 125;
  }
  if (!wait_for_go()) return 125;
  int status_fd = fcntl(STATUS_FD, F_GETFD) == -1 ? -1 : STATUS_FD;
  close_fds_above(status_fd);
  if (status_fd >= 0) fcntl(status_fd, F_SETFD, FD_CLOEXEC);

  /* The foreground launcher forwards SIGINT/SIGTERM/SIGHUP to the whole process group: they are
   * meant for the command. SIGPIPE: the status reader may be gone (a detached job). */
  int ignored[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGTTOU, SIGTTIN};
  sigset_t none;
  sigemptyset(&none);
  pid_t command = fork();
  if (command < 0) {
    perror("ckpt-unit-init: fork");
    return 125;
  }
  if (command == 0) {
    sigprocmask(SIG_SETMASK, &none, NULL);
    execvp(argv[1], argv + 1);
    fprintf(stderr, "ckpt-unit-init: cannot run %s: %s\n", argv[1], strerror(errno));
    _exit(errno == ENOENT ? 127 : 126);
  }
  for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++) signal(ignored[i], SIG_IGN);

  int command_status = 0;
  for (;;) {
    int st;
    pid_t pid = waitpid(-1, &st, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break; /* ECHILD: the unit is empty */
    }
    if (pid != command) continue;
    command_status = st;
    if (status_fd >= 0) {
      char line[32];
      int n = WIFSIGNALED(st) ? snprintf(line, sizeof line, "signal %d\n", WTERMSIG(st)) : snprintf(line, sizeof line, "exit %d\n", WEXITSTATUS(st));
      if (write(status_fd, line, (size_t)n) < 0) { /* nobody listens: a detached job */ }
      close(status_fd);
      status_fd = -1;
    }
    detach_stdio();
  }
  if (WIFSIGNALED(command_status)) {
    int sig = WTERMSIG(command_status);
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    signal(sig, SIG_DFL);
    sigprocmask(SIG_SETMASK, &none, NULL);
    kill(getpid(), sig);
  }
  return WIFEXITED(command_status) ? WEXITSTATUS(command_status) : 125;
}
