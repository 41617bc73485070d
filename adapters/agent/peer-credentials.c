// Who is at the other end of a unix socket, as the kernel says: the node agent's request gateway
// runs this once per accepted connection, passing the connection as fd 3 (Node cannot call
// getsockopt(SO_PEERCRED) itself). Prints one line: "UID GID PID [GROUP…]" — the peer's
// credentials when it connected (SO_PEERCRED) and its supplementary groups (SO_PEERGROUPS).
// Exit 1 with a message on stderr when fd 3 is not a connected unix socket.
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#define FD 3
#define MAX_GROUPS 65536

int main(void) {
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(FD, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof cred) {
    fprintf(stderr, "ckpt-peer-credentials: SO_PEERCRED on fd %d: %s\n", FD, strerror(errno));
    return 1;
  }
  static gid_t groups[MAX_GROUPS];
  socklen_t glen = sizeof groups;
  if (getsockopt(FD, SOL_SOCKET, SO_PEERGROUPS, groups, &glen) != 0) {
    fprintf(stderr, "ckpt-peer-credentials: SO_PEERGROUPS on fd %d: %s\n", FD, strerror(errno));
    return 1;
  }
  printf("%u %u %d", (unsigned)cred.uid, (unsigned)cred.gid, (int)cred.pid);
  for (size_t i = 0; i < glen / sizeof(gid_t); i++) printf(" %u", (unsigned)groups[i]);
  printf("\n");
  return fflush(stdout) == 0 ? 0 : 1;
}
