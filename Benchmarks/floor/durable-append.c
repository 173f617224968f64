// Appends 600 bytes and fdatasyncs, n times: CPU per durable append (the floor of a send's write).
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/resource.h>
#include <time.h>
int main(int argc, char **argv) {
  int n = atoi(argv[1]); int fd = open(argv[2], O_CREAT | O_WRONLY | O_APPEND | O_TRUNC, 0644);
  char buf[600] = {0}; struct rusage r0, r1; struct timespec t0, t1;
  getrusage(RUSAGE_SELF, &r0); clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < n; i++) { write(fd, buf, sizeof buf); fdatasync(fd); }
  getrusage(RUSAGE_SELF, &r1); clock_gettime(CLOCK_MONOTONIC, &t1);
  double cpu = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) + (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) + ((r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec)) / 1e6;
  double wall = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf("%d appends with fdatasync: CPU %.1f us each, wall %.1f us each\n", n, cpu / n * 1e6, wall / n * 1e6);
  return 0;
}
