/*
 * ckpt-criu-swrk: runs `criu swrk FD` and relays its RPC messages over stdin/stdout.
 *
 *   ckpt-criu-swrk [--cgroup DIR]... [--user UID --group GID [--groups G,…] --caps N,…] -- CRIU
 *
 * CRIU's RPC speaks over a SOCK_SEQPACKET unix socket, where every message is one packet; Node
 * cannot create one. This bridge makes the socketpair, starts CRIU on one end and frames the
 * packets on its own stdio: each message is a 32-bit little-endian length, then that many bytes
 * (a serialized criu_req on stdin, a criu_resp on stdout). CRIU's own stdout goes to our stderr.
 *
 * CRIU takes the socket's peer (SO_PEERCRED: the process that made the socketpair, i.e. this
 * bridge) as its client and opens images_dir_fd / work_dir_fd as /proc/BRIDGE/fd/N: the caller
 * hands those directories to this bridge as inherited descriptors. CRIU does not inherit them.
 *
 * --cgroup DIR: CRIU is moved into DIR (its pid written to DIR/cgroup.procs) before it starts,
 * so everything it restores is born there.
 *
 * --user/--group/--groups/--caps: CRIU runs as that user (real, effective and saved uid and gid,
 * those supplementary groups) keeping only capabilities N,… (ambient, so they survive the exec),
 * with --unprivileged. A dump of another uid's process needs either CAP_SYS_RESOURCE (prlimit(2))
 * or the same real uid and gid as that process: acting as the job's owner needs neither root's uid
 * nor that capability (adapters/checkpointers/criu-owner.ts lists what it does need, and why).
 * The cgroups are entered first, as root.
 *
 *   ckpt-criu-swrk --exec --user UID --group GID [--groups G,…] --caps N,… -- PROGRAM ARG…
 *
 * only becomes that user so and execs PROGRAM (criu restore as a new PID namespace's init).
 *
 * Stdin at EOF (the caller is gone): the socket is shut, so a CRIU waiting for a notify answer
 * fails instead of waiting forever. Exits with CRIU's exit status (128 + N for signal N); 126 when
 * a cgroup cannot be entered or the owner's credentials cannot be taken, 127 when CRIU cannot be run, 125 on a
 * bridge error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <grp.h>
#include <sys/prctl.h>
#include <linux/capability.h>
#include <linux/close_range.h>
#include <sys/syscall.h>

#define MAX_MSG (4u << 20)
#define MAX_CGROUPS 16
#define MAX_GROUPS 256

/* Whom criu acts as (--user …); uid < 0: root, as started. */
struct identity {
  long uid, gid;
  gid_t groups[MAX_GROUPS];
  int ngroups;
  uint64_t caps;
};

static void die(const char *what) {
  fprintf(stderr, "ckpt-criu-swrk: %s: %s\n", what, strerror(errno));
  exit(125);
}

static int read_full(int fd, void *buf, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = read(fd, (char *)buf + done, len - done);
    if (n == 0) return done == 0 ? 0 : -1;
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    done += (size_t)n;
  }
  return 1;
}

static int write_full(int fd, const void *buf, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = write(fd, (const char *)buf + done, len - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    done += (size_t)n;
  }
  return 0;
}

static void enter_cgroup(const char *dir) {
  char path[4096], pid[32];
  if (snprintf(path, sizeof path, "%s/cgroup.procs", dir) >= (int)sizeof path) {
    fprintf(stderr, "ckpt-criu-swrk: cgroup path too long: %s\n", dir);
    _exit(126);
  }
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  int len = snprintf(pid, sizeof pid, "%d", (int)getpid());
  if (fd < 0 || write(fd, pid, (size_t)len) != len) {
    fprintf(stderr, "ckpt-criu-swrk: cannot enter cgroup %s: %s\n", dir, strerror(errno));
    _exit(126);
  }
  close(fd);
}

static void fail_identity(const char *what) {
  fprintf(stderr, "ckpt-criu-swrk: cannot act as the job's owner: %s: %s\n", what, strerror(errno));
  _exit(126);
}

/* Becomes the owner, keeping exactly id->caps (permitted, effective, inheritable and ambient). */
static void become(const struct identity *id) {
  if (prctl(PR_SET_KEEPCAPS, 1L, 0L, 0L, 0L) < 0) fail_identity("PR_SET_KEEPCAPS");
  if (setgroups((size_t)id->ngroups, id->groups) < 0) fail_identity("setgroups");
  if (setresgid((gid_t)id->gid, (gid_t)id->gid, (gid_t)id->gid) < 0) fail_identity("setresgid");
  if (setresuid((uid_t)id->uid, (uid_t)id->uid, (uid_t)id->uid) < 0) fail_identity("setresuid");
  struct __user_cap_header_struct head = {_LINUX_CAPABILITY_VERSION_3, 0};
  uint32_t lo = (uint32_t)id->caps, hi = (uint32_t)(id->caps >> 32);
  struct __user_cap_data_struct data[2] = {{lo, lo, lo}, {hi, hi, hi}};
  if (syscall(SYS_capset, &head, data) < 0) fail_identity("capset");
  for (int cap = 0; cap < 64; cap++)
    if ((id->caps >> cap) & 1)
      if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, (long)cap, 0L, 0L) < 0) fail_identity("raising an ambient capability");
  if (getuid() != (uid_t)id->uid || geteuid() != (uid_t)id->uid || getgid() != (gid_t)id->gid) {
    errno = EPERM;
    fail_identity("credentials did not change");
  }
}

static pid_t start_criu(const char *criu, int sk, char **cgroups, int ncgroups, const struct identity *id) {
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid > 0) return pid;
  for (int i = 0; i < ncgroups; i++) enter_cgroup(cgroups[i]);
  if (id->uid >= 0) become(id);
  int null = open("/dev/null", O_RDONLY);
  if (null < 0 || dup2(null, 0) < 0 || dup2(2, 1) < 0) {
    perror("ckpt-criu-swrk: stdio");
    _exit(127);
  }
  if (null > 2) close(null);
  /* Nothing of ours above stderr reaches criu but its end of the socket. */
  syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC);
  int flags = fcntl(sk, F_GETFD);
  if (flags < 0 || fcntl(sk, F_SETFD, flags & ~FD_CLOEXEC) < 0) {
    perror("ckpt-criu-swrk: socket");
    _exit(127);
  }
  char fd[16];
  snprintf(fd, sizeof fd, "%d", sk);
  signal(SIGPIPE, SIG_DFL);
  if (id->uid >= 0) execl(criu, criu, "swrk", fd, "--unprivileged", (char *)NULL);
  else execl(criu, criu, "swrk", fd, (char *)NULL);
  fprintf(stderr, "ckpt-criu-swrk: cannot run %s: %s\n", criu, strerror(errno));
  _exit(127);
}

/* One packet from criu → one frame on stdout. Descriptors criu attaches are closed. 0 at EOF. */
static int relay_from_criu(int sk, char *buf, int *out_ok) {
  char control[CMSG_SPACE(sizeof(int) * 8)];
  struct iovec iov = {buf + 4, MAX_MSG};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
  ssize_t n;
  do n = recvmsg(sk, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) die("recvmsg from criu");
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    int nfds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    for (int i = 0; i < nfds; i++) close(((int *)CMSG_DATA(c))[i]);
  }
  if (n == 0) return 0;
  if (msg.msg_flags & MSG_TRUNC) {
    fprintf(stderr, "ckpt-criu-swrk: a message from criu exceeds %u bytes\n", MAX_MSG);
    exit(125);
  }
  uint32_t len = (uint32_t)n;
  unsigned char *h = (unsigned char *)buf;
  h[0] = len & 0xff, h[1] = (len >> 8) & 0xff, h[2] = (len >> 16) & 0xff, h[3] = len >> 24;
  if (*out_ok && write_full(1, buf, 4 + len) < 0) *out_ok = 0; /* caller gone: keep draining */
  return 1;
}

/* One frame from stdin → one packet to criu. 0 at EOF (or a broken frame). */
static int relay_to_criu(int sk, char *buf) {
  unsigned char h[4];
  if (read_full(0, h, 4) <= 0) return 0;
  uint32_t len = h[0] | (h[1] << 8) | (h[2] << 16) | ((uint32_t)h[3] << 24);
  if (len > MAX_MSG) {
    fprintf(stderr, "ckpt-criu-swrk: a frame of %u bytes on stdin exceeds %u\n", len, MAX_MSG);
    return 0;
  }
  if (read_full(0, buf, len) <= 0) return 0;
  ssize_t n;
  do n = send(sk, buf, len, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  return n == (ssize_t)len ? 1 : 0;
}

/* A decimal number in [0, max], or -1. */
static long number(const char *s, long max) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  return errno != 0 || end == s || *end != '\0' || v < 0 || v > max ? -1 : v;
}

/* "N,N,…" into out (at most max numbers, each ≤ top); the count, or -1. "" is none. */
static int numbers(const char *list, long top, long *out, int max) {
  int n = 0;
  char buf[4096];
  if (strlen(list) >= sizeof buf) return -1;
  strcpy(buf, list);
  for (char *save = NULL, *s = strtok_r(buf, ",", &save); s != NULL; s = strtok_r(NULL, ",", &save)) {
    if (n >= max || (out[n] = number(s, top)) < 0) return -1;
    n++;
  }
  return n;
}

#define USAGE                                                                                          \
  "usage: ckpt-criu-swrk [--cgroup DIR]... [--user UID --group GID [--groups G,...] --caps N,...] -- CRIU\n" \
  "       ckpt-criu-swrk --exec --user UID --group GID [--groups G,...] --caps N,... -- PROGRAM ARG...\n"

int main(int argc, char **argv) {
  char *cgroups[MAX_CGROUPS];
  struct identity id = {.uid = -1, .gid = -1};
  long list[MAX_GROUPS];
  int ncgroups = 0, i = 1, bad = 0, have_caps = 0, exec_only = 0;
  for (; i < argc && strcmp(argv[i], "--") != 0 && !bad; i++) {
    const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(opt, "--exec") == 0) exec_only = 1;
    else if (val == NULL) bad = 1;
    else if (strcmp(opt, "--cgroup") == 0 && ncgroups < MAX_CGROUPS) cgroups[ncgroups++] = argv[++i];
    else if (strcmp(opt, "--user") == 0) bad = (id.uid = number(argv[++i], 0xfffffffeL)) < 0;
    else if (strcmp(opt, "--group") == 0) bad = (id.gid = number(argv[++i], 0xfffffffeL)) < 0;
    else if (strcmp(opt, "--groups") == 0) {
      int n = numbers(argv[++i], 0xfffffffeL, list, MAX_GROUPS);
      bad = n < 0;
      for (int k = 0; k < n; k++) id.groups[k] = (gid_t)list[k];
      id.ngroups = n < 0 ? 0 : n;
    } else if (strcmp(opt, "--caps") == 0) {
      int n = numbers(argv[++i], 63, list, 64);
      bad = n < 0, have_caps = 1;
      for (int k = 0; k < n; k++) id.caps |= 1ULL << list[k];
    } else bad = 1;
  }
  /* As a user: uid, gid and the capabilities all given, and never uid 0 this way. */
  if (!bad && (id.uid >= 0 || id.gid >= 0 || have_caps || exec_only)) bad = id.uid <= 0 || id.gid < 0 || !have_caps || (exec_only && ncgroups > 0);
  if (bad || i + 1 >= argc) {
    fprintf(stderr, USAGE " (at most %d cgroups, %d groups)\n", MAX_CGROUPS, MAX_GROUPS);
    return 125;
  }
  if (exec_only) {
    become(&id);
    execv(argv[i + 1], argv + i + 1);
    fprintf(stderr, "ckpt-criu-swrk: cannot run %s: %s\n", argv[i + 1], strerror(errno));
    return 127;
  }
  signal(SIGPIPE, SIG_IGN);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) die("socketpair");
  pid_t criu = start_criu(argv[i + 1], sv[1], cgroups, ncgroups, &id);
  close(sv[1]);

  char *buf = malloc(4 + MAX_MSG);
  if (buf == NULL) die("malloc");
  int sk = sv[0], in_open = 1, out_ok = 1;
  while (sk >= 0) {
    struct pollfd fds[2] = {{sk, POLLIN, 0}, {in_open ? 0 : -1, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      if (!relay_from_criu(sk, buf, &out_ok)) {
        close(sk);
        sk = -1;
        continue;
      }
    }
    if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      if (!relay_to_criu(sk, buf)) {
        in_open = 0;
        shutdown(sk, SHUT_RDWR); /* criu's next recv or send fails: it cleans up and exits */
      }
    }
  }
  int status;
  while (waitpid(criu, &status, 0) < 0)
    if (errno != EINTR) die("waitpid");
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
