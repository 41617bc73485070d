/*
 * ckpt-unit-init: the first process of every job unit, so that a unit is always ONE process tree.
 *
 *   ckpt-unit-init COMMAND [ARGS...]      (fd 3: the launcher's gate)
 *
 * CRIU dumps one tree per call. A double-forked daemon would be re-parented to PID 1 and leave
 * the command's tree; as a child subreaper this init adopts it instead, so `criu dump -t INIT`
 * captures every process of the unit, and a restore brings every escapee back with it.
 *
 * The unit gets its own PID namespace (CLONE_NEWPID, no other namespace) whose PID 1 is this
 * init: every dump's root is then a namespace init, and CRIU recreates the namespace at each
 * restore, so the original PIDs never collide with live processes and the unit can be
 * checkpointed and restored again and again in the same shape. The process started by the
 * launcher unshares, forks that PID 1, reports it on fd 3 as "root HOSTPID" and exits: nothing
 * outside the dumped tree stays behind. The mount namespace is shared, so /proc inside the job
 * shows host PIDs (getpid() says 1 in the init, /proc/self is the host's view). Where no PID
 * namespace can be made (no CAP_SYS_ADMIN, a kernel without it) the init runs as before and
 * reports its own PID.
 *
 * 0. unshare(CLONE_NEWPID) and fork the namespace's PID 1, which becomes a session leader (CRIU
 *    refuses a namespace init whose session leader is outside the namespace); report its PID;
 * 1. PR_SET_CHILD_SUBREAPER; wait for "go" on fd 3 (EOF without it: exit 125, nothing runs);
 * 2. close every descriptor above 2, the gate too: nothing of the unit leads back to the launcher
 *    (CRIU refuses a unix socket to a process outside the dumped tree);
 * 3. fork the command (signal dispositions reset, exec'd in place of the child): the init's first
 *    and only fork, so the log's first ProcessForked of the root is the command;
 * 4. reap every descendant. The foreground `ckpt run` learns the command's end from the log (its
 *    ProcessExited), not from the init. When the command ends, let go of the caller's stdio so a
 *    lingering daemon does not hold the caller's pipes open through the init;
 * 5. when no descendant is left, end the way the command ended (same exit status or signal; a
 *    namespace init cannot kill itself with a signal: it exits with 128 + the signal then).
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
#include <sched.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define GATE_FD 3

static void close_fds_above_2(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return;
  int self = dirfd(d);
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    int fd = atoi(e->d_name);
    if (fd > 2 && fd != self) close(fd);
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

/* "root PID\n" on fd 3: the launcher moves that process into the unit's cgroups, then says go. */
static int report_root(pid_t root) {
  char line[32];
  int n = snprintf(line, sizeof line, "root %d\n", (int)root);
  return write(GATE_FD, line, (size_t)n) == n;
}

/* Returns in the process that is the unit's root: a new PID namespace's PID 1 when one could be
 * made (the caller exits then), else the caller itself. */
static void become_root(void) {
  if (unshare(CLONE_NEWPID) != 0) {
    if (!report_root(getpid())) exit(125);
    return;
  }
  pid_t init = fork();
  if (init < 0) {
    perror("ckpt-unit-init: fork of the PID namespace's init");
    exit(125);
  }
  if (init > 0) _exit(report_root(init) ? 0 : 125);
  if (setsid() < 0) {
    perror("ckpt-unit-init: setsid");
    _exit(125);
  }
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: ckpt-unit-init COMMAND [ARGS...] (started by ckpt run)\n");
    return 125;
  }
  become_root();
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
    perror("ckpt-unit-init: PR_SET_CHILD_SUBREAPER");
    return 125;
  }
  if (!wait_for_go()) return 125;
  close_fds_above_2();

  /* The foreground launcher forwards SIGINT/SIGTERM/SIGHUP to the whole process group: they are
   * meant for the command. SIGPIPE: the caller's stdout may be gone. */
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
    detach_stdio();
  }
  if (WIFSIGNALED(command_status)) {
    int sig = WTERMSIG(command_status);
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    signal(sig, SIG_DFL);
    sigprocmask(SIG_SETMASK, &none, NULL);
    kill(getpid(), sig);
    if (getpid() == 1) return 128 + sig; /* ignored by the kernel: a namespace init's own signal */
  }
  return WIFEXITED(command_status) ? WEXITSTATUS(command_status) : 125;
}
