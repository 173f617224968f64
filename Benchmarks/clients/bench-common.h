/*
 * What rdkafka-bench.c and nats-bench.c share: the monotonic clock, the
 * paced schedule, latency percentiles and the servers' CPU time, so both
 * clients measure alike.
 */
#ifndef POSTDUIF_BENCH_COMMON_H
#define POSTDUIF_BENCH_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Sleeps until message `sent` is due on an absolute schedule of `rate` a
 * second from `start` (a late message is sent at once, never skipped). */
static void pace(int64_t start, long sent, double rate) {
    if (rate <= 0) return;
    int64_t due = start + (int64_t)((double)sent * 1e9 / rate);
    if (due > now_ns()) {
        struct timespec ts = {due / 1000000000, due % 1000000000};
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
    }
}

static int compare_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* p50, p99, p99.9 and max of the non-zero slots, in milliseconds. */
static void percentiles(uint32_t *values, long n, double out[4]) {
    long m = 0;
    for (long i = 0; i < n; i++)
        if (values[i] != 0) values[m++] = values[i];
    memset(out, 0, 4 * sizeof(double));
    if (m == 0) return;
    qsort(values, m, sizeof(uint32_t), compare_u32);
    double qs[3] = {0.50, 0.99, 0.999};
    for (int i = 0; i < 3; i++) {
        long at = (long)(qs[i] * (double)m);
        if (at >= m) at = m - 1;
        out[i] = values[at] / 1000.0;
    }
    out[3] = values[m - 1] / 1000.0;
}

/* CPU seconds (user + system) the processes have used so far. */
static double server_cpu(const int *pids, int count) {
    double total = 0;
    long ticks = sysconf(_SC_CLK_TCK);
    for (int i = 0; i < count; i++) {
        char path[64], buffer[4096];
        snprintf(path, sizeof path, "/proc/%d/stat", pids[i]);
        FILE *file = fopen(path, "r");
        if (!file) continue;
        size_t length = fread(buffer, 1, sizeof buffer - 1, file);
        fclose(file);
        buffer[length] = 0;
        char *field = strrchr(buffer, ')');
        if (!field) continue;
        unsigned long utime = 0, stime = 0;
        /* After the name: state is field 3; utime and stime are 14 and 15. */
        if (sscanf(field + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) == 2)
            total += (double)(utime + stime) / (double)ticks;
    }
    return total;
}

#endif
