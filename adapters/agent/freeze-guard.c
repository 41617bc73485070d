// ckpt-freeze-guard: bounds one freeze of one unit, whatever happens to the node agent.
//
//   ckpt-freeze-guard DEADLINE_MS FILE...
//
// DEADLINE_MS: wall-clock time (ms since the epoch) after which the unit must not stay frozen.
// FILE: the unit's freeze controls — a v1 `freezer.state`, a cgroup2 `cgroup.freeze` — plus,
// optionally, the unit's `cgroup.kill` (cgroup2) and `cgroup.procs` (who is traced; the v1 kill).
// Each is opened once, at start, with O_NOFOLLOW, and must be on a cgroup filesystem: a path
// swapped afterwards changes nothing.
//
// The agent starts the guard before it freezes the unit, in a session of its own (outside the
// unit's cgroups), with a pipe on stdin. The guard prints "armed\n" once every file is open.
// Then it waits for the first of:
//   - "d" from the agent (disarm: the unit was thawed, stopped or aborted normally): exit 0;
//   - "k" from the agent (the checkpoint is committed and meant to stop the unit): from now on
//     the way out is a kill, not a thaw — a thawed copy would run on beside its restart;
//   - the deadline, or EOF on stdin (the agent died): thaw the unit (or kill it, after "k").
// A thaw is kept until no process of the unit is traced any more and it has stayed so for a
// second: a CRIU the dead agent had started may still hold the unit (ptrace-seized, so the thaw
// does not free it) and, when it is done, put the freezer back the way it found it — frozen.
// It never runs a shell and takes nothing from the environment.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#define CGROUP_SUPER_MAGIC 0x27e0eb
#define CGROUP2_SUPER_MAGIC 0x63677270
#define MAX_FILES 16

enum kind { V1_STATE, V2_FREEZE, V2_KILL, PROCS };
struct control { enum kind kind; int fd; const char *path; };

static struct control controls[MAX_FILES];
static int ncontrols;

static const char *base(const char *path) {
  const char *slash = strrchr(path, '/');
  return slash ? slash + 1 : path;
}

static long long now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void put(int fd, const char *text, const char *path) {
  if (pwrite(fd, text, strlen(text), 0) < 0) fprintf(stderr, "ckpt-freeze-guard: writing %s to %s: %s\n", text, path, strerror(errno));
}

static void thaw(void) {
  for (int i = 0; i < ncontrols; i++) {
    if (controls[i].kind == V1_STATE) put(controls[i].fd, "THAWED", controls[i].path);
    if (controls[i].kind == V2_FREEZE) put(controls[i].fd, "0", controls[i].path);
  }
}

// cgroup.kill where there is one; under v1 each process listed, then a thaw so that the kill lands.
// Is a process of the unit traced (TracerPid ≠ 0): CRIU at work on it?
static int traced(void) {
  for (int i = 0; i < ncontrols; i++) {
    if (controls[i].kind != PROCS) continue;
    char buf[65536];
    ssize_t n = pread(controls[i].fd, buf, sizeof buf - 1, 0);
    if (n <= 0) continue;
    buf[n] = 0;
    char *save;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
      char path[64], status[4096];
      snprintf(path, sizeof path, "/proc/%ld/status", strtol(line, NULL, 10));
      int fd = open(path, O_RDONLY | O_CLOEXEC);
      if (fd < 0) continue;
      ssize_t m = read(fd, status, sizeof status - 1);
      close(fd);
      if (m <= 0) continue;
      status[m] = 0;
      const char *t = strstr(status, "TracerPid:");
      if (t && strtol(t + 10, NULL, 10) != 0) return 1;
    }
  }
  return 0;
}

// Thaws until the unit has been free of tracers for a second (at most ten minutes).
static void thaw_for_good(void) {
  struct timespec tick = { 0, 50 * 1000000 };
  for (int clean = 0, i = 0; clean < 20 && i < 12000; i++) {
    thaw();
    clean = traced() ? 0 : clean + 1;
    nanosleep(&tick, NULL);
  }
  thaw();
}

static void kill_unit(void) {
  for (int i = 0; i < ncontrols; i++) {
    if (controls[i].kind == V2_KILL) put(controls[i].fd, "1", controls[i].path);
    if (controls[i].kind != PROCS) continue;
    char buf[65536];
    ssize_t n = pread(controls[i].fd, buf, sizeof buf - 1, 0);
    if (n < 0) continue;
    buf[n] = 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
      long pid = strtol(line, NULL, 10);
      if (pid > 1) kill((pid_t)pid, SIGKILL);
    }
  }
  thaw();
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN); // a log that is gone must not end the guard
  signal(SIGHUP, SIG_IGN);
  if (argc < 3 || argc - 2 > MAX_FILES) {
    fprintf(stderr, "usage: ckpt-freeze-guard DEADLINE_MS FILE... (1 to %d files)\n", MAX_FILES);
    return 2;
  }
  char *end;
  long long deadline = strtoll(argv[1], &end, 10);
  if (*end != 0 || deadline <= 0) {
    fprintf(stderr, "ckpt-freeze-guard: deadline \"%s\" is not a time in ms since the epoch\n", argv[1]);
    return 2;
  }
  setsid(); // fails harmlessly when the agent already made it a session leader
  for (int i = 2; i < argc; i++) {
    const char *name = base(argv[i]);
    struct control *c = &controls[ncontrols];
    if (!strcmp(name, "freezer.state")) c->kind = V1_STATE;
    else if (!strcmp(name, "cgroup.freeze")) c->kind = V2_FREEZE;
    else if (!strcmp(name, "cgroup.kill")) c->kind = V2_KILL;
    else if (!strcmp(name, "cgroup.procs")) c->kind = PROCS;
    else {
      fprintf(stderr, "ckpt-freeze-guard: %s is not freezer.state, cgroup.freeze, cgroup.kill or cgroup.procs\n", argv[i]);
      return 2;
    }
    c->path = argv[i];
    c->fd = open(argv[i], (c->kind == PROCS ? O_RDONLY : O_WRONLY) | O_NOFOLLOW | O_CLOEXEC);
    struct statfs fs;
    if (c->fd < 0 || fstatfs(c->fd, &fs) < 0) {
      fprintf(stderr, "ckpt-freeze-guard: cannot open %s: %s\n", argv[i], strerror(errno));
      return 1;
    }
    if (fs.f_type != CGROUP_SUPER_MAGIC && fs.f_type != CGROUP2_SUPER_MAGIC) {
      fprintf(stderr, "ckpt-freeze-guard: %s is not on a cgroup filesystem\n", argv[i]);
      return 1;
    }
    ncontrols++;
  }
  if (write(STDOUT_FILENO, "armed\n", 6) != 6) return 1;

  int stop = 0;
  for (;;) {
    long long left = deadline - now_ms();
    if (left <= 0) break;
    struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };
    int ready = poll(&p, 1, left > 60000 ? 60000 : (int)left);
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) continue; // re-reads the clock: a suspend or a clock step moves the deadline nearer
    char buf[64];
    ssize_t n = ready < 0 ? 0 : read(STDIN_FILENO, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) {
      fprintf(stderr, "ckpt-freeze-guard: the node agent is gone; %s the unit\n", stop ? "killing" : "thawing");
      break;
    }
    for (ssize_t i = 0; i < n; i++) {
      if (buf[i] == 'd') return 0;
      if (buf[i] == 'k') stop = 1;
    }
  }
  if (deadline - now_ms() <= 0) fprintf(stderr, "ckpt-freeze-guard: the deadline passed; %s the unit\n", stop ? "killing" : "thawing");
  if (stop) kill_unit();
  else thaw_for_good();
  return 0;
}
