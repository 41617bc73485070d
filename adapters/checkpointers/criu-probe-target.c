// ckpt-criu-probe-target: a small process for the functional CRIU probe (adapters/checkpointers/
// criu-probe.ts and scripts/install-criu.sh). It holds what real jobs hold, is dumped and restored,
// and then proves on every TCP connection that each of those still works.
//
//   ckpt-criu-probe-target [--tcp] [--udp] [--socketpair] [--pipe] [--flock PATH] [--established]
//       Sets up what the flags name (--tcp: a listening socket on 127.0.0.1, ephemeral port;
//       --established: also a TCP connection to itself, both ends held), prints
//       "ready PORT HOSTPID" on stdout (HOSTPID read from /proc/self, so it is the pid in the
//       prober's namespace even when this runs as init of a new PID namespace), points stdout at
//       /dev/null and serves: each accepted connection gets one line and is closed:
//       "probe udp=ok socketpair=ok pipe=ok flock=held established=ok" (only the held things;
//       each is ok/held, or what failed). Without --tcp it prints "ready 0 HOSTPID" and only
//       waits (the prober then looks at what it holds from outside, e.g. its lock in /proc/locks).
//   ckpt-criu-probe-target --connect PORT
//       Connects to 127.0.0.1:PORT, prints the line it gets; exit 0 when one came within 5 s.
//
// It closes every inherited fd above 2 and becomes a session leader first: CRIU dumps a process
// whose fds point outside its tree poorly, and a non-leader needs --shell-job.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

static int udp = -1, pair[2] = {-1, -1}, pipefd[2] = {-1, -1}, lockfd = -1;
static int est_client = -1, est_server = -1;
static const char *lock_path;

static void die(const char *what) {
  fprintf(stderr, "ckpt-criu-probe-target: %s: %s\n", what, strerror(errno));
  exit(1);
}

static int tcp_listener(int *port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  int one = 1, s = socket(AF_INET, SOCK_STREAM, 0);
  // As servers do: the port is bound again at restore while earlier connections are in TIME_WAIT.
  if (s >= 0) setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 16) < 0) die("tcp listen");
  if (getsockname(s, (struct sockaddr *)&a, &len) < 0) die("getsockname");
  *port = ntohs(a.sin_port);
  return s;
}

static int tcp_connect(int port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) < 0) return -1;
  return s;
}

/* Writes one byte into `out` and reads it back from `in` within 1 s: "ok", or what failed. */
static const char *roundtrip(int out, int in) {
  char c = 'x';
  struct pollfd p = {.fd = in, .events = POLLIN};
  if (write(out, &c, 1) != 1) return "write-failed";
  if (poll(&p, 1, 1000) != 1) return "no-data";
  if (read(in, &c, 1) != 1 || c != 'x') return "read-failed";
  return "ok";
}

static const char *udp_roundtrip(void) {
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  char c = 'u';
  struct pollfd p = {.fd = udp, .events = POLLIN};
  if (getsockname(udp, (struct sockaddr *)&a, &len) < 0) return "getsockname-failed";
  if (sendto(udp, &c, 1, 0, (struct sockaddr *)&a, len) != 1) return "send-failed";
  if (poll(&p, 1, 1000) != 1) return "no-data";
  if (recv(udp, &c, 1, 0) != 1 || c != 'u') return "recv-failed";
  return "ok";
}

/* The lock is held by this open file description when another one cannot take it. */
static const char *lock_state(void) {
  int other = open(lock_path, O_RDWR | O_CLOEXEC);
  if (other < 0) return "file-gone";
  int taken = flock(other, LOCK_EX | LOCK_NB) == 0;
  close(other);
  return taken ? "free" : "held";
}

static void answer(int conn) {
  char line[256];
  int n = snprintf(line, sizeof line, "probe");
  if (udp >= 0) n += snprintf(line + n, sizeof line - n, " udp=%s", udp_roundtrip());
  if (pair[0] >= 0) n += snprintf(line + n, sizeof line - n, " socketpair=%s", roundtrip(pair[0], pair[1]));
  if (pipefd[0] >= 0) n += snprintf(line + n, sizeof line - n, " pipe=%s", roundtrip(pipefd[1], pipefd[0]));
  if (lockfd >= 0) n += snprintf(line + n, sizeof line - n, " flock=%s", lock_state());
  if (est_client >= 0) n += snprintf(line + n, sizeof line - n, " established=%s", roundtrip(est_client, est_server));
  n += snprintf(line + n, sizeof line - n, "\n");
  if (write(conn, line, n) < 0) { /* the prober went away: nothing to do */ }
  close(conn);
}

static int connect_mode(const char *port_arg) {
  int s = tcp_connect(atoi(port_arg));
  char buf[256];
  size_t got = 0;
  if (s < 0) die("connect");
  struct pollfd p = {.fd = s, .events = POLLIN};
  while (got < sizeof buf - 1 && poll(&p, 1, 5000) == 1) {
    ssize_t r = read(s, buf + got, sizeof buf - 1 - got);
    if (r <= 0) break;
    got += r;
    if (memchr(buf, '\n', got)) break;
  }
  if (got == 0 || !memchr(buf, '\n', got)) {
    fprintf(stderr, "ckpt-criu-probe-target: no line from 127.0.0.1:%s within 5 s\n", port_arg);
    return 1;
  }
  fwrite(buf, 1, got, stdout);
  return 0;
}

int main(int argc, char **argv) {
  int want_tcp = 0, want_est = 0, port = 0, listener = -1;
  if (argc == 3 && strcmp(argv[1], "--connect") == 0) return connect_mode(argv[2]);
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--tcp") == 0) want_tcp = 1;
    else if (strcmp(argv[i], "--udp") == 0) udp = 0;
    else if (strcmp(argv[i], "--socketpair") == 0) pair[0] = 0;
    else if (strcmp(argv[i], "--pipe") == 0) pipefd[0] = 0;
    else if (strcmp(argv[i], "--established") == 0) want_tcp = want_est = 1;
    else if (strcmp(argv[i], "--flock") == 0 && i + 1 < argc) lock_path = argv[++i];
    else {
      fprintf(stderr, "usage: %s [--tcp] [--udp] [--socketpair] [--pipe] [--flock PATH] [--established] | --connect PORT\n", argv[0]);
      return 2;
    }
  }
  for (int fd = 3; fd < 1024; fd++) close(fd);
  setsid();
  signal(SIGPIPE, SIG_IGN);

  if (want_tcp) listener = tcp_listener(&port);
  if (udp == 0) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    udp = socket(AF_INET, SOCK_DGRAM, 0);
    if (udp < 0 || bind(udp, (struct sockaddr *)&a, sizeof a) < 0) die("udp");
  }
  if (pair[0] == 0 && socketpair(AF_UNIX, SOCK_STREAM, 0, pair) < 0) die("socketpair");
  if (pipefd[0] == 0 && pipe(pipefd) < 0) die("pipe");
  if (lock_path) {
    lockfd = open(lock_path, O_RDWR | O_CREAT, 0600);
    if (lockfd < 0 || flock(lockfd, LOCK_EX) < 0) die("flock");
  }
  if (want_est) {
    est_client = tcp_connect(port);
    if (est_client < 0) die("connect to itself");
    est_server = accept(listener, NULL, NULL);
    if (est_server < 0) die("accept");
  }

  char self[32] = {0};
  if (readlink("/proc/self", self, sizeof self - 1) <= 0) snprintf(self, sizeof self, "%d", getpid());
  printf("ready %d %s\n", port, self);
  fflush(stdout);
  int null = open("/dev/null", O_RDWR);
  if (null >= 0) {
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    if (null > 2) close(null);
  }

  while (listener < 0) pause();
  for (;;) {
    int conn = accept(listener, NULL, NULL);
    if (conn >= 0) answer(conn);
    else if (errno != EINTR) sleep(1);
  }
}
