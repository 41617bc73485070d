/*
 * proc-connector — print Linux process events (NETLINK_CONNECTOR / CN_IDX_PROC) as JSON lines.
 *
 * Used by adapters/tracking/proc-connector.ts. One JSON object per line on stdout:
 *   {"e":"ready","rcvbuf":N,"netns":W}            once the kernel acknowledged the subscription
 *                                                 (N = effective SO_RCVBUF, the kernel doubles
 *                                                 the requested size); always the first line.
 *                                                 W = "initial" (the helper runs in the initial
 *                                                 network namespace) or "entered" (it runs in another
 *                                                 one and opened its socket in the initial one: below)
 *   {"e":"fork","ts":T,"ppid":P,"ptgid":PT,"pid":C,"tgid":CT}     threads too (pid != tgid)
 *   {"e":"exec","ts":T,"pid":P,"tgid":T}
 *   {"e":"exit","ts":T,"pid":P,"tgid":T,"code":C,"signal":S,"ppid":PP,"ptgid":PPT,
 *    "status":X|null,"termsig":Y|null}           code = raw wait status, signal = exit_signal
 *                                                 (-1 for threads), status/termsig decoded
 *   {"e":"sid","ts":T,"pid":P,"tgid":T}
 *   {"e":"comm","ts":T,"pid":P,"tgid":T,"comm":"..."}
 *   {"e":"uid"|"gid","ts":T,"pid":P,"tgid":T,"real":R,"effective":E}   setuid/setgid and kin
 *   {"e":"ptrace","ts":T,"pid":P,"tgid":T,"tracer":TT}   attached (TT = tracer's tgid) or detached (0)
 *   {"e":"overrun","count":N,"lost":M}           recv failed with ENOBUFS: N = such failures so
 *                                                 far, M = events the kernel dropped so far
 *                                                 (SO_MEMINFO drops; omitted if unavailable).
 *                                                 Repeated with the same N and a larger M when
 *                                                 more were dropped silently before the queue
 *                                                 drained (one ENOBUFS per congestion episode).
 *   {"e":"error","message":"..."}                fatal; also on stderr; then exit status 1
 * ts = the kernel's timestamp_ns (ns since boot). Coredump (and newer) events are ignored.
 * Exits 0 on SIGTERM/SIGINT/SIGHUP, on EPIPE on stdout, and when its parent dies.
 *
 * Network namespaces: the kernel's proc connector exists only in the initial network namespace;
 * from any other one PROC_CN_MCAST_LISTEN is refused ("Connection refused"). An agent whose jobs
 * live in their host's own namespace (the testbed's hosts, scripts/testbed.sh) runs there itself,
 * and so does this helper, its child. So when the helper's namespace is not PID 1's, it enters
 * PID 1's (setns on /proc/1/ns/net) just to create its netlink socket — a socket stays bound to
 * the namespace it was made in — checks that it really is there (the nsfs inode of its own
 * /proc/self/ns/net against the fstat of the /proc/1/ns/net it opened), and goes back to its own
 * namespace at once, checked too: all it does afterwards is read that socket and write stdout, an
 * inherited pipe no namespace affects. Process events are global (one PID namespace), so the
 * events it reports are the same either way. Each failing step is named (needs root:
 * CAP_SYS_ADMIN). Where /proc/1 is closed even to root (some sandboxes), --netns PATH names the
 * initial namespace instead (a bind mount such as `ip netns attach NAME PID` makes; the agent
 * passes $CKPT_INITIAL_NETNS), checked against PID 1's whenever that can be read; a wrong one
 * ends in the kernel's refusal, reported as such.
 *
 * Build: gcc -O2 -Wall -Wextra -o proc-connector proc-connector.c   (needs root to run)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>

#ifndef SO_RCVBUFFORCE
#define SO_RCVBUFFORCE 33
#endif
#ifndef SO_SNDBUFFORCE
#define SO_SNDBUFFORCE 32
#endif
#ifndef SO_MEMINFO
#define SO_MEMINFO 55
#endif
#ifndef F_SETPIPE_SZ
#define F_SETPIPE_SZ 1031
#endif

#define DEFAULT_RCVBUF (16 * 1024 * 1024)
#define OUT_CAP (1024 * 1024)  /* stdout buffer */
#define LINE_MAX_BYTES 512     /* no line is longer than this */
#define BATCH 64               /* datagrams per recvmmsg */
#define DGRAM_BYTES 1024       /* a proc event datagram is < 100 bytes */
#define ACK_TIMEOUT_MS 5000

/* ---------- output ---------- */

static char out[OUT_CAP];
static size_t out_len;

static int nl_fd = -1;
static volatile sig_atomic_t subscribed;
static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t in_write;
static sigset_t stop_signals;

static unsigned char ignore_msg[NLMSG_SPACE(sizeof(struct cn_msg) + sizeof(enum proc_cn_mcast_op))];
static size_t ignore_msg_len;

/* Tell the kernel we stop listening (keeps its listener count right). Async-signal-safe. */
static void unsubscribe(void) {
  if (subscribed && nl_fd >= 0) {
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    (void)sendto(nl_fd, ignore_msg, ignore_msg_len, MSG_DONTWAIT, (struct sockaddr *)&kernel, sizeof kernel);
    subscribed = 0;
  }
}

static void on_stop_signal(int sig) {
  (void)sig;
  stop_requested = 1;
  /* Blocked in write(2) on a stdout nobody reads: leave right away. */
  if (in_write) {
    unsubscribe();
    _exit(0);
  }
}

static void clean_exit(void) __attribute__((noreturn));
static void clean_exit(void) {
  unsubscribe();
  exit(0);
}

static void flush_out(void) {
  size_t done = 0;
  if (out_len == 0) return;
  in_write = 1;
  sigprocmask(SIG_UNBLOCK, &stop_signals, NULL);
  while (done < out_len) {
    ssize_t n = write(STDOUT_FILENO, out + done, out_len - done);
    if (n > 0) {
      done += (size_t)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      struct pollfd p = {.fd = STDOUT_FILENO, .events = POLLOUT};
      (void)poll(&p, 1, -1);
    } else {
      sigprocmask(SIG_BLOCK, &stop_signals, NULL);
      in_write = 0;
      if (n < 0 && errno == EPIPE) clean_exit();
      unsubscribe();
      {
        static const char msg[] = "proc-connector: write to stdout failed\n";
        (void)!write(STDERR_FILENO, msg, sizeof msg - 1);
      }
      exit(1);
    }
  }
  sigprocmask(SIG_BLOCK, &stop_signals, NULL);
  in_write = 0;
  out_len = 0;
}

static void reserve_line(void) {
  if (out_len + LINE_MAX_BYTES > OUT_CAP) flush_out();
}

static void put_raw(const char *s, size_t n) {
  memcpy(out + out_len, s, n);
  out_len += n;
}

#define PUT_LIT(s) put_raw((s), sizeof(s) - 1)

static void put_u64(uint64_t v) {
  char tmp[24];
  size_t i = sizeof tmp;
  do {
    tmp[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  put_raw(tmp + i, sizeof tmp - i);
}

static void put_i64(int64_t v) {
  if (v < 0) {
    out[out_len++] = '-';
    put_u64((uint64_t)0 - (uint64_t)v);
  } else {
    put_u64((uint64_t)v);
  }
}

/* JSON string from bytes: valid UTF-8 passes through, other bytes become \u00XX (latin-1). */
static void put_json_string(const unsigned char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  size_t i = 0;
  out[out_len++] = '"';
  while (i < n) {
    unsigned char c = s[i];
    size_t len = 0;
    if (c == '"' || c == '\\') {
      out[out_len++] = '\\';
      out[out_len++] = (char)c;
      i++;
      continue;
    }
    if (c < 0x20) {
      PUT_LIT("\\u00");
      out[out_len++] = hex[c >> 4];
      out[out_len++] = hex[c & 15];
      i++;
      continue;
    }
    if (c < 0x80) {
      out[out_len++] = (char)c;
      i++;
      continue;
    }
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c >= 0xe0 && c <= 0xef) len = 3;
    else if (c >= 0xf0 && c <= 0xf4) len = 4;
    if (len && i + len <= n) {
      size_t k;
      int ok = 1;
      for (k = 1; k < len; k++)
        if ((s[i + k] & 0xc0) != 0x80) ok = 0;
      if (ok && len == 3 && ((c == 0xe0 && s[i + 1] < 0xa0) || (c == 0xed && s[i + 1] > 0x9f))) ok = 0;
      if (ok && len == 4 && ((c == 0xf0 && s[i + 1] < 0x90) || (c == 0xf4 && s[i + 1] > 0x8f))) ok = 0;
      if (ok) {
        put_raw((const char *)s + i, len);
        i += len;
        continue;
      }
    }
    PUT_LIT("\\u00");
    out[out_len++] = hex[c >> 4];
    out[out_len++] = hex[c & 15];
    i++;
  }
  out[out_len++] = '"';
}

static void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fatal(const char *fmt, ...) {
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "proc-connector: %s\n", msg);
  reserve_line();
  PUT_LIT("{\"e\":\"error\",\"message\":");
  put_json_string((const unsigned char *)msg, strlen(msg));
  PUT_LIT("}\n");
  flush_out();
  unsubscribe();
  exit(1);
}

/* ---------- netlink ---------- */

static uint32_t listen_seq, listen_ack;
static unsigned long long overruns;
static int ready;
static int effective_rcvbuf;

static size_t build_mcast_msg(unsigned char *buf, size_t cap, enum proc_cn_mcast_op op, uint32_t seq, uint32_t ack) {
  size_t len = NLMSG_LENGTH(sizeof(struct cn_msg) + sizeof op);
  struct nlmsghdr nh;
  struct cn_msg cn;
  if (len > cap) return 0;
  memset(buf, 0, cap);
  memset(&nh, 0, sizeof nh);
  nh.nlmsg_len = (uint32_t)len;
  nh.nlmsg_type = NLMSG_DONE;
  nh.nlmsg_pid = 0;
  memset(&cn, 0, sizeof cn);
  cn.id.idx = CN_IDX_PROC;
  cn.id.val = CN_VAL_PROC;
  cn.seq = seq;
  cn.ack = ack;
  cn.len = sizeof op;
  memcpy(buf, &nh, sizeof nh);
  memcpy(buf + NLMSG_HDRLEN, &cn, sizeof cn);
  memcpy(buf + NLMSG_HDRLEN + sizeof cn, &op, sizeof op);
  return len;
}

static long long dropped_events(void) {
  uint32_t mem[SK_MEMINFO_VARS];
  socklen_t len = sizeof mem;
  memset(mem, 0, sizeof mem);
  if (getsockopt(nl_fd, SOL_SOCKET, SO_MEMINFO, mem, &len) != 0 || len <= SK_MEMINFO_DROPS * sizeof(uint32_t))
    return -1;
  return (long long)mem[SK_MEMINFO_DROPS];
}

static long long reported_lost = -1;

static void emit_overrun_lost(long long lost) {
  reported_lost = lost;
  reserve_line();
  PUT_LIT("{\"e\":\"overrun\",\"count\":");
  put_u64(overruns);
  if (lost >= 0) {
    PUT_LIT(",\"lost\":");
    put_i64(lost);
  }
  PUT_LIT("}\n");
}

static void emit_overrun(void) { emit_overrun_lost(dropped_events()); }

/* The kernel drops silently while the socket stays congested after an ENOBUFS; once we have
   drained the queue, report the final number if it grew. */
static void report_silent_drops(void) {
  long long lost;
  if (overruns == 0 || reported_lost < 0) return;
  lost = dropped_events();
  if (lost > reported_lost) emit_overrun_lost(lost);
}

static void emit_ts_pid(const char *head, size_t head_len, uint64_t ts, int pid, int tgid) {
  put_raw(head, head_len);
  PUT_LIT(",\"ts\":");
  put_u64(ts);
  PUT_LIT(",\"pid\":");
  put_i64(pid);
  PUT_LIT(",\"tgid\":");
  put_i64(tgid);
}

static int entered_initial_netns;

static void become_ready(void) {
  ready = 1;
  reserve_line();
  PUT_LIT("{\"e\":\"ready\",\"rcvbuf\":");
  put_i64(effective_rcvbuf);
  if (entered_initial_netns) PUT_LIT(",\"netns\":\"entered\"}\n");
  else PUT_LIT(",\"netns\":\"initial\"}\n");
  if (overruns) emit_overrun();
  flush_out();
}

static void handle_event(const struct cn_msg *cn_hdr, const unsigned char *data, size_t data_len) {
  struct proc_event ev;
  memset(&ev, 0, sizeof ev);
  memcpy(&ev, data, data_len < sizeof ev ? data_len : sizeof ev);

  if (ev.what == PROC_EVENT_NONE) {
    /* The kernel echoes our ack + 1 (it overwrites seq with its per-CPU counter). Other
       processes' subscriptions produce acks too: ours is told apart by its random ack. */
    if (!ready && cn_hdr->ack == listen_ack + 1) {
      if (ev.event_data.ack.err != 0)
        fatal("the kernel refused the proc connector subscription (%s): it needs root / CAP_NET_ADMIN "
              "in the initial user and PID namespaces",
              strerror((int)ev.event_data.ack.err));
      become_ready();
    }
    return;
  }
  if (!ready) return; /* events before the acknowledgement are not reported */

  reserve_line();
  switch (ev.what) {
    case PROC_EVENT_FORK: {
      const struct fork_proc_event *f = &ev.event_data.fork;
      PUT_LIT("{\"e\":\"fork\",\"ts\":");
      put_u64(ev.timestamp_ns);
      PUT_LIT(",\"ppid\":");
      put_i64(f->parent_pid);
      PUT_LIT(",\"ptgid\":");
      put_i64(f->parent_tgid);
      PUT_LIT(",\"pid\":");
      put_i64(f->child_pid);
      PUT_LIT(",\"tgid\":");
      put_i64(f->child_tgid);
      PUT_LIT("}\n");
      break;
    }
    case PROC_EVENT_EXEC:
      emit_ts_pid("{\"e\":\"exec\"", 11, ev.timestamp_ns, ev.event_data.exec.process_pid,
                  ev.event_data.exec.process_tgid);
      PUT_LIT("}\n");
      break;
    case PROC_EVENT_EXIT: {
      const struct exit_proc_event *x = &ev.event_data.exit;
      int status = (int)x->exit_code;
      emit_ts_pid("{\"e\":\"exit\"", 11, ev.timestamp_ns, x->process_pid, x->process_tgid);
      PUT_LIT(",\"code\":");
      put_u64(x->exit_code);
      PUT_LIT(",\"signal\":");
      put_i64((int32_t)x->exit_signal);
      PUT_LIT(",\"ppid\":");
      put_i64(x->parent_pid);
      PUT_LIT(",\"ptgid\":");
      put_i64(x->parent_tgid);
      PUT_LIT(",\"status\":");
      if (WIFEXITED(status)) put_i64(WEXITSTATUS(status));
      else PUT_LIT("null");
      PUT_LIT(",\"termsig\":");
      if (WIFSIGNALED(status)) put_i64(WTERMSIG(status));
      else PUT_LIT("null");
      PUT_LIT("}\n");
      break;
    }
    case PROC_EVENT_SID:
      emit_ts_pid("{\"e\":\"sid\"", 10, ev.timestamp_ns, ev.event_data.sid.process_pid,
                  ev.event_data.sid.process_tgid);
      PUT_LIT("}\n");
      break;
    case PROC_EVENT_COMM: {
      const struct comm_proc_event *c = &ev.event_data.comm;
      emit_ts_pid("{\"e\":\"comm\"", 11, ev.timestamp_ns, c->process_pid, c->process_tgid);
      PUT_LIT(",\"comm\":");
      put_json_string((const unsigned char *)c->comm, strnlen(c->comm, sizeof c->comm));
      PUT_LIT("}\n");
      break;
    }
    case PROC_EVENT_UID:
    case PROC_EVENT_GID: {
      const struct id_proc_event *id = &ev.event_data.id; /* r and e are unions: ruid/rgid, euid/egid */
      if (ev.what == PROC_EVENT_UID)
        emit_ts_pid("{\"e\":\"uid\"", 10, ev.timestamp_ns, id->process_pid, id->process_tgid);
      else
        emit_ts_pid("{\"e\":\"gid\"", 10, ev.timestamp_ns, id->process_pid, id->process_tgid);
      PUT_LIT(",\"real\":");
      put_u64(id->r.ruid);
      PUT_LIT(",\"effective\":");
      put_u64(id->e.euid);
      PUT_LIT("}\n");
      break;
    }
    case PROC_EVENT_PTRACE: {
      const struct ptrace_proc_event *pt = &ev.event_data.ptrace;
      emit_ts_pid("{\"e\":\"ptrace\"", 13, ev.timestamp_ns, pt->process_pid, pt->process_tgid);
      PUT_LIT(",\"tracer\":");
      put_i64(pt->tracer_tgid);
      PUT_LIT("}\n");
      break;
    }
    default: /* coredump and anything newer */
      break;
  }
}

static void handle_datagram(const unsigned char *buf, size_t len) {
  const struct nlmsghdr *nh = (const struct nlmsghdr *)buf;
  size_t left = len;
  for (; NLMSG_OK(nh, left); nh = NLMSG_NEXT(nh, left)) {
    const unsigned char *payload = (const unsigned char *)NLMSG_DATA(nh);
    size_t payload_len = nh->nlmsg_len - NLMSG_HDRLEN;
    struct cn_msg cn;
    if (nh->nlmsg_type == NLMSG_NOOP || nh->nlmsg_type == NLMSG_ERROR) continue;
    if (payload_len < sizeof cn) continue;
    memcpy(&cn, payload, sizeof cn);
    if (cn.id.idx != CN_IDX_PROC || cn.id.val != CN_VAL_PROC) continue;
    if ((size_t)cn.len > payload_len - sizeof cn) continue;
    handle_event(&cn, payload + sizeof cn, cn.len);
  }
}

static void enlarge_stdout(void) {
  int size = 1 << 20;
  if (fcntl(STDOUT_FILENO, F_SETPIPE_SZ, size) < 0) {
    /* Node's child stdio is a socketpair rather than a pipe. */
    int sock_size = 4 << 20;
    if (setsockopt(STDOUT_FILENO, SOL_SOCKET, SO_SNDBUFFORCE, &sock_size, sizeof sock_size) < 0)
      (void)setsockopt(STDOUT_FILENO, SOL_SOCKET, SO_SNDBUF, &sock_size, sizeof sock_size);
  }
}

static long long now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---------- network namespace (see the top of the file) ---------- */

static int same_inode(const struct stat *a, const struct stat *b) { return a->st_dev == b->st_dev && a->st_ino == b->st_ino; }

#define DEFAULT_NETNS "/proc/1/ns/net"
static const char *netns_path = DEFAULT_NETNS;
static int netns_given;

/* Enters the initial network namespace (netns_path) unless the helper is in it already. Returns
   an fd of the helper's own namespace to go back to, or -1 when it did not move. Where /proc/1
   is closed even to root (some sandboxes) and no --netns was given, it stays: the kernel's
   acknowledgement, or its refusal, says whether it is in the right one. */
static int enter_initial_netns(void) {
  struct stat own, initial, pid1, now;
  int initial_fd, own_fd;
  if (stat("/proc/self/ns/net", &own) != 0) fatal("cannot read the helper's network namespace (/proc/self/ns/net): %s", strerror(errno));
  initial_fd = open(netns_path, O_RDONLY | O_CLOEXEC);
  if (initial_fd < 0) {
    if (!netns_given) return -1;
    fatal("cannot open %s, given as the initial network namespace: %s", netns_path, strerror(errno));
  }
  if (fstat(initial_fd, &initial) != 0) fatal("cannot stat %s: %s", netns_path, strerror(errno));
  if (same_inode(&own, &initial)) {
    close(initial_fd);
    return -1;
  }
  /* A path given is checked against PID 1's namespace whenever that one can be read. */
  if (netns_given && stat(DEFAULT_NETNS, &pid1) == 0 && !same_inode(&pid1, &initial))
    fatal("%s is network namespace net:[%llu], not PID 1's (net:[%llu]), the initial one where the proc connector works",
          netns_path, (unsigned long long)initial.st_ino, (unsigned long long)pid1.st_ino);
  own_fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  if (own_fd < 0) fatal("cannot open the helper's own network namespace (/proc/self/ns/net): %s", strerror(errno));
  if (setns(initial_fd, CLONE_NEWNET) != 0)
    fatal("the helper runs in network namespace net:[%llu], not in the initial one (%s, net:[%llu]) where the proc "
          "connector works, and cannot enter it: setns: %s (it needs root: CAP_SYS_ADMIN in the initial user namespace)",
          (unsigned long long)own.st_ino, netns_path, (unsigned long long)initial.st_ino, strerror(errno));
  if (stat("/proc/self/ns/net", &now) != 0 || !same_inode(&now, &initial))
    fatal("entering the network namespace %s (net:[%llu]) left the helper in net:[%llu]", netns_path,
          (unsigned long long)initial.st_ino, (unsigned long long)now.st_ino);
  close(initial_fd);
  entered_initial_netns = 1;
  return own_fd;
}

/* Back to the helper's own network namespace (own_fd from enter_initial_netns), checked. */
static void leave_initial_netns(int own_fd) {
  struct stat own, now;
  if (own_fd < 0) return;
  if (fstat(own_fd, &own) != 0) fatal("cannot stat the helper's own network namespace: %s", strerror(errno));
  if (setns(own_fd, CLONE_NEWNET) != 0)
    fatal("cannot go back to the helper's own network namespace net:[%llu] after opening the proc connector socket: setns: %s",
          (unsigned long long)own.st_ino, strerror(errno));
  if (stat("/proc/self/ns/net", &now) != 0 || !same_inode(&now, &own))
    fatal("going back to the helper's own network namespace net:[%llu] left it in net:[%llu]", (unsigned long long)own.st_ino,
          (unsigned long long)now.st_ino);
  close(own_fd);
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: proc-connector [--rcvbuf BYTES] [--netns PATH]\n"
          "Prints Linux process events (fork, exec, exit, setsid, comm) from the kernel proc\n"
          "connector as JSON lines on stdout. Needs root (CAP_NET_ADMIN).\n"
          "  --rcvbuf BYTES  netlink receive buffer (default %d; SO_RCVBUFFORCE, else SO_RCVBUF)\n"
          "  --netns PATH    the initial network namespace, where the proc connector works (default %s);\n"
          "                  a helper in another one opens its socket there (setns) and comes back\n"
          "  --help          this text\n",
          DEFAULT_RCVBUF, DEFAULT_NETNS);
}

static int parse_size(const char *s, int *value) {
  char *end;
  unsigned long long v;
  if (!s || !*s || *s == '-') return 0;
  errno = 0;
  v = strtoull(s, &end, 10);
  if (errno || *end || v == 0 || v > INT_MAX) return 0;
  *value = (int)v;
  return 1;
}

int main(int argc, char **argv) {
  int rcvbuf = DEFAULT_RCVBUF;
  int effective = 0;
  socklen_t optlen = sizeof effective;
  struct sockaddr_nl local = {.nl_family = AF_NETLINK, .nl_groups = CN_IDX_PROC, .nl_pid = 0};
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  unsigned char listen_msg[sizeof ignore_msg];
  size_t listen_len;
  static unsigned char bufs[BATCH][DGRAM_BYTES];
  static struct mmsghdr msgs[BATCH];
  static struct iovec iovs[BATCH];
  static struct sockaddr_nl from[BATCH];
  struct sigaction sa;
  sigset_t wait_mask;
  long long deadline;
  int own_netns;
  int i;

  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(argv[i], "--rcvbuf") == 0) {
      if (!parse_size(i + 1 < argc ? argv[i + 1] : NULL, &rcvbuf)) fatal("--rcvbuf needs a size in bytes (1..%d)", INT_MAX);
      i++;
    } else if (strcmp(argv[i], "--netns") == 0) {
      if (i + 1 >= argc || argv[i + 1][0] != '/') fatal("--netns needs an absolute path to a network namespace file");
      netns_path = argv[++i];
      netns_given = 1;
    } else if (strncmp(argv[i], "--rcvbuf=", 9) == 0) {
      if (!parse_size(argv[i] + 9, &rcvbuf)) fatal("--rcvbuf needs a size in bytes (1..%d)", INT_MAX);
    } else {
      usage(stderr);
      fatal("unknown option %s", argv[i]);
    }
  }

  /* Signals: blocked except while waiting in ppoll() or writing stdout. */
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP);
  sigprocmask(SIG_BLOCK, &stop_signals, &wait_mask);
  sigdelset(&wait_mask, SIGTERM);
  sigdelset(&wait_mask, SIGINT);
  sigdelset(&wait_mask, SIGHUP);
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigfillset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  /* Do not outlive the agent that started us (which may itself be PID 1 in a container). */
  {
    pid_t parent = getppid();
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) return 0;
  }

  enlarge_stdout();

  own_netns = enter_initial_netns();
  nl_fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_CONNECTOR);
  if (nl_fd < 0) fatal("socket(AF_NETLINK, NETLINK_CONNECTOR): %s", strerror(errno));
  leave_initial_netns(own_netns);
  if (setsockopt(nl_fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0 &&
      setsockopt(nl_fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) < 0)
    fatal("setsockopt(SO_RCVBUF, %d): %s", rcvbuf, strerror(errno));
  if (getsockopt(nl_fd, SOL_SOCKET, SO_RCVBUF, &effective, &optlen) < 0) effective = rcvbuf;
  effective_rcvbuf = effective;
  if (bind(nl_fd, (struct sockaddr *)&local, sizeof local) < 0) {
    if (errno == EPERM || errno == EACCES)
      fatal("cannot join the proc connector group (%s): it needs root / CAP_NET_ADMIN", strerror(errno));
    fatal("bind(NETLINK_CONNECTOR, CN_IDX_PROC): %s", strerror(errno));
  }

  {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    listen_seq = (uint32_t)getpid();
    listen_ack = ((uint32_t)t.tv_nsec ^ ((uint32_t)getpid() << 12)) & 0x7fffffffu;
    if (listen_ack == 0) listen_ack = 1;
  }
  listen_len = build_mcast_msg(listen_msg, sizeof listen_msg, PROC_CN_MCAST_LISTEN, listen_seq, listen_ack);
  ignore_msg_len = build_mcast_msg(ignore_msg, sizeof ignore_msg, PROC_CN_MCAST_IGNORE, listen_seq + 1, 0);
  if (sendto(nl_fd, listen_msg, listen_len, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) {
    if (errno == EPERM || errno == EACCES)
      fatal("cannot subscribe to the proc connector (%s): it needs root / CAP_NET_ADMIN", strerror(errno));
    if (errno == ECONNREFUSED)
      fatal("sending PROC_CN_MCAST_LISTEN: %s: the proc connector exists only in the initial network namespace, and "
            "the helper's socket is not in it (%s cannot be read here: give a bind mount of the initial namespace with "
            "--netns PATH, e.g. one made by `ip netns attach NAME PID` for a PID in it; the agent passes $CKPT_INITIAL_NETNS)",
            strerror(errno), DEFAULT_NETNS);
    fatal("sending PROC_CN_MCAST_LISTEN: %s", strerror(errno));
  }
  subscribed = 1;
  deadline = now_ms() + ACK_TIMEOUT_MS;

  for (i = 0; i < BATCH; i++) {
    iovs[i].iov_base = bufs[i];
    iovs[i].iov_len = DGRAM_BYTES;
    msgs[i].msg_hdr.msg_iov = &iovs[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }

  for (;;) {
    int n, k;
    if (stop_requested) break;
    for (k = 0; k < BATCH; k++) {
      msgs[k].msg_hdr.msg_name = &from[k];
      msgs[k].msg_hdr.msg_namelen = sizeof from[k];
      msgs[k].msg_hdr.msg_flags = 0;
    }
    n = recvmmsg(nl_fd, msgs, BATCH, MSG_DONTWAIT, NULL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        struct pollfd p = {.fd = nl_fd, .events = POLLIN};
        struct timespec timeout, *tp = NULL;
        if (ready) report_silent_drops();
        flush_out();
        if (!ready) {
          long long left = deadline - now_ms();
          if (left <= 0) {
            if (overruns == 0)
              fatal("no acknowledgement of the proc connector subscription from the kernel within %d ms "
                    "(it needs root / CAP_NET_ADMIN in the initial user and PID namespaces)",
                    ACK_TIMEOUT_MS);
            /* The acknowledgement was probably among the dropped messages. */
            become_ready();
            continue;
          }
          timeout.tv_sec = left / 1000;
          timeout.tv_nsec = (left % 1000) * 1000000;
          tp = &timeout;
        }
        /* POLLERR means a pending ENOBUFS, which the next recvmmsg reports. */
        if (ppoll(&p, 1, tp, &wait_mask) < 0 && errno != EINTR) fatal("ppoll: %s", strerror(errno));
        continue;
      }
      if (errno == ENOBUFS) {
        overruns++;
        if (ready) emit_overrun();
        continue;
      }
      if (errno == EINTR) continue;
      fatal("recv on the proc connector socket: %s", strerror(errno));
    }
    for (k = 0; k < n; k++) {
      const struct msghdr *h = &msgs[k].msg_hdr;
      if (h->msg_flags & MSG_TRUNC) continue;
      if (h->msg_namelen >= sizeof(struct sockaddr_nl) && from[k].nl_pid != 0) continue; /* not the kernel */
      handle_datagram(bufs[k], msgs[k].msg_len);
    }
  }
  flush_out();
  clean_exit();
}
