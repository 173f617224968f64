// Loopback TCP ping-pong: a one-thread epoll server answers each 200-byte request with 300 bytes;
// prints the server's CPU per exchange (the kernel's floor for one HTTP-sized request and answer).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
int main(int argc, char **argv) {
  int n = atoi(argv[1]); int port = 29555;
  int ls = socket(AF_INET, SOCK_STREAM, 0); int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)}; a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(ls, (void*)&a, sizeof a) || listen(ls, 8)) { perror("bind"); return 1; }
  pid_t child = fork();
  if (child == 0) {
    int c = socket(AF_INET, SOCK_STREAM, 0); connect(c, (void*)&a, sizeof a); setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char req[200], buf[4096]; memset(req, 'x', sizeof req);
    for (int i = 0; i < n; i++) { write(c, req, sizeof req); int got = 0; while (got < 300) got += read(c, buf, sizeof buf); }
    return 0;
  }
  int s = accept(ls, 0, 0); setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int ep = epoll_create1(0); struct epoll_event ev = {.events = EPOLLIN, .data.fd = s}; epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
  char buf[4096], resp[300]; memset(resp, 'y', sizeof resp);
  struct rusage r0, r1; getrusage(RUSAGE_SELF, &r0);
  int done = 0, have = 0;
  while (done < n) {
    struct epoll_event got; epoll_wait(ep, &got, 1, -1);
    int k = read(s, buf, sizeof buf); if (k <= 0) break; have += k;
    while (have >= 200) { have -= 200; write(s, resp, sizeof resp); done++; }
  }
  getrusage(RUSAGE_SELF, &r1);
  double cpu = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) + (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) + ((r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec)) / 1e6;
  printf("%d exchanges, server CPU %.3f s = %.1f us per exchange\n", done, cpu, cpu / done * 1e6);
  wait(0); return 0;
}
