/*
 * nats-bench: JetStream publish ack latency and end-to-end latency as the
 * NATS C client (Debian's libnats-dev) sees them: the peer that
 * rdkafka-bench is compared with, measured the same way.
 *
 *   nats-bench --url nats://127.0.0.1:4222 --stream bench --rate 20000 \
 *       --seconds 10 [--replicas 3] [--e2e] [--server-pid PID]... [--json FILE]
 *
 * Asynchronous publishes with at most --max-pending (256) unacknowledged,
 * values of --size bytes on subjects keyed over --keys conversations, to a
 * file-storage stream. --rate paces sends on an absolute schedule (0: as
 * fast as the client takes them). Ack latency is the publish call to its
 * acknowledgement; with --e2e a push consumer (deliver new, ack none) in
 * the same process receives the stream, and the latency is the publish call
 * to the message's arrival. Bounded as rdkafka-bench is.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <nats/nats.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench-common.h"

static const char *url = "nats://127.0.0.1:4222";
static const char *stream = "natsbench";
static const char *json_path = NULL;
static const char *label = "nats";
static double rate = 20000;
static double seconds = 10;
static long count_max = 5000000;
static int size = 1024;
static int keys = 10000;
static int replicas = 1;
static int max_pending = 256;
static int e2e = 0;
static int server_pids[8];
static int server_pid_count = 0;

static uint32_t *ack_us, *e2e_us;
static atomic_long acked, failed, received;

static void record(uint32_t *slots, const void *data, int length) {
    if (length < 16) return;
    int64_t sent;
    long index;
    memcpy(&sent, data, 8);
    memcpy(&index, (const char *)data + 8, 8);
    if (index < 0 || index >= count_max) return;
    int64_t latency = (now_ns() - sent) / 1000;
    slots[index] = latency > UINT32_MAX ? UINT32_MAX : (uint32_t)latency;
}

static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure) {
    (void)js;
    (void)closure;
    if (pa) {
        record(ack_us, natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
        atomic_fetch_add(&acked, 1);
    } else {
        atomic_fetch_add(&failed, 1);
        static atomic_int reported;
        if (pae && atomic_fetch_add(&reported, 1) < 5) fprintf(stderr, "publish failed: %s\n", natsStatus_GetText(pae->Err));
    }
    natsMsg_Destroy(msg);
}

static void on_message(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
    (void)nc;
    (void)sub;
    (void)closure;
    record(e2e_us, natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
    atomic_fetch_add(&received, 1);
    natsMsg_Destroy(msg);
}

static void check(natsStatus status, const char *what) {
    if (status != NATS_OK) {
        fprintf(stderr, "%s: %s\n", what, natsStatus_GetText(status));
        exit(1);
    }
}

static void usage(void) {
    fprintf(stderr, "usage: nats-bench --url URL --stream NAME [--rate N] [--seconds S] [--count N] [--size BYTES] [--keys N]\n"
                    "       [--replicas N] [--max-pending N] [--e2e] [--server-pid PID]... [--label L] [--json FILE]\n");
    exit(2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--e2e")) { e2e = 1; continue; }
        if (!v) usage();
        if (!strcmp(a, "--url")) url = v;
        else if (!strcmp(a, "--stream")) stream = v;
        else if (!strcmp(a, "--rate")) rate = atof(v);
        else if (!strcmp(a, "--seconds")) seconds = atof(v);
        else if (!strcmp(a, "--count")) count_max = atol(v);
        else if (!strcmp(a, "--size")) size = atoi(v);
        else if (!strcmp(a, "--keys")) keys = atoi(v);
        else if (!strcmp(a, "--replicas")) replicas = atoi(v);
        else if (!strcmp(a, "--max-pending")) max_pending = atoi(v);
        else if (!strcmp(a, "--label")) label = v;
        else if (!strcmp(a, "--json")) json_path = v;
        else if (!strcmp(a, "--server-pid") && server_pid_count < 8) server_pids[server_pid_count++] = atoi(v);
        else usage();
        i++;
    }
    if (size < 16 || count_max < 1 || seconds <= 0 || seconds > 600) usage();
    ack_us = calloc(count_max, sizeof(uint32_t));
    e2e_us = calloc(count_max, sizeof(uint32_t));
    if (!ack_us || !e2e_us) return 1;

    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    check(natsConnection_ConnectTo(&nc, url), "connect");
    jsOptions options;
    jsOptions_Init(&options);
    options.PublishAsync.MaxPending = max_pending;
    options.PublishAsync.AckHandler = on_ack;
    check(natsConnection_JetStream(&js, nc, &options), "jetstream");

    char subjects[128];
    snprintf(subjects, sizeof subjects, "%s.>", stream);
    const char *subject_list[1] = {subjects};
    jsStreamConfig config;
    jsStreamConfig_Init(&config);
    config.Name = stream;
    config.Subjects = subject_list;
    config.SubjectsLen = 1;
    config.Storage = js_FileStorage;
    config.Replicas = replicas;
    jsErrCode code = 0;
    js_DeleteStream(js, stream, NULL, NULL);
    jsStreamInfo *info = NULL;
    check(js_AddStream(&info, js, &config, NULL, &code), "add stream");
    jsStreamInfo_Destroy(info);

    natsSubscription *subscription = NULL;
    if (e2e) {
        jsSubOptions sub_options;
        jsSubOptions_Init(&sub_options);
        sub_options.Stream = stream;
        sub_options.Config.DeliverPolicy = js_DeliverNew;
        sub_options.Config.AckPolicy = js_AckNone;
        check(js_Subscribe(&subscription, js, subjects, on_message, NULL, NULL, &sub_options, &code), "subscribe");
        check(natsSubscription_SetPendingLimits(subscription, -1, -1), "pending limits");
    }

    char *value = calloc(1, size);
    char subject[160];
    /* Warm-up: the connection and the stream's first writes. */
    for (int i = 0; i < 100; i++) {
        long warm = -1;
        memcpy(value + 8, &warm, 8);
        snprintf(subject, sizeof subject, "%s.warm", stream);
        js_PublishAsync(js, subject, value, size, NULL);
    }
    jsPubOptions complete;
    jsPubOptions_Init(&complete);
    complete.MaxWait = 10000;
    js_PublishAsyncComplete(js, &complete);
    atomic_store(&acked, 0);
    atomic_store(&received, 0);

    double cpu_before = server_cpu(server_pids, server_pid_count);
    int64_t start = now_ns(), end = start + (int64_t)(seconds * 1e9);
    long sent = 0;
    unsigned seed = 42;
    while (sent < count_max) {
        if (now_ns() >= end) break;
        pace(start, sent, rate);
        snprintf(subject, sizeof subject, "%s.conversation-%d", stream, (int)(rand_r(&seed) % keys));
        int64_t at = now_ns();
        memcpy(value, &at, 8);
        memcpy(value + 8, &sent, 8);
        /* Blocks (up to StallWait) while MaxPending acks are outstanding. */
        natsStatus status = js_PublishAsync(js, subject, value, size, NULL);
        if (status != NATS_OK) {
            if (status == NATS_TIMEOUT) continue;
            fprintf(stderr, "publish: %s\n", natsStatus_GetText(status));
            break;
        }
        sent++;
    }
    int64_t sending_ended = now_ns();
    js_PublishAsyncComplete(js, &complete);
    double cpu = server_cpu(server_pids, server_pid_count) - cpu_before;
    if (e2e) {
        int64_t give_up = now_ns() + 10 * 1000000000LL;
        while (atomic_load(&received) < sent && now_ns() < give_up) {
            struct timespec pause = {0, 10000000};
            nanosleep(&pause, NULL);
        }
        natsSubscription_Unsubscribe(subscription);
        natsSubscription_Destroy(subscription);
    }
    double elapsed = (double)(sending_ended - start) / 1e9;
    long ok = atomic_load(&acked), bad = atomic_load(&failed), got = atomic_load(&received);
    double ack[4], endtoend[4];
    percentiles(ack_us, sent, ack);
    percentiles(e2e_us, sent, endtoend);
    double per_message_us = ok > 0 && server_pid_count > 0 ? cpu * 1e6 / (double)ok : 0;
    printf("%s: %.0f msgs/s sent (%ld, %ld acked, %ld failed), ack p50 %.2f p99 %.2f p99.9 %.2f max %.2f ms", label, (double)sent / elapsed, sent, ok, bad,
           ack[0], ack[1], ack[2], ack[3]);
    if (e2e) printf(", e2e (%ld received) p50 %.2f p99 %.2f p99.9 %.2f ms", got, endtoend[0], endtoend[1], endtoend[2]);
    if (server_pid_count > 0) printf(", server CPU %.2f s = %.1f us per message", cpu, per_message_us);
    printf("\n");
    if (json_path) {
        FILE *out = fopen(json_path, "w");
        if (out) {
            fprintf(out, "{\"label\":\"%s\",\"client\":\"nats.c %s\",\"rate\":%.0f,\"sent\":%ld,\"acked\":%ld,\"failed\":%ld,"
                         "\"sendsPerSecond\":%.1f,\"ackMilliseconds\":{\"p50\":%.3f,\"p99\":%.3f,\"p99.9\":%.3f,\"max\":%.3f},",
                    label, nats_GetVersion(), rate, sent, ok, bad, (double)sent / elapsed, ack[0], ack[1], ack[2], ack[3]);
            if (e2e) fprintf(out, "\"received\":%ld,\"e2eMilliseconds\":{\"p50\":%.3f,\"p99\":%.3f,\"p99.9\":%.3f,\"max\":%.3f},", got, endtoend[0], endtoend[1], endtoend[2], endtoend[3]);
            fprintf(out, "\"serverCPUSeconds\":%.3f,\"serverCPUMicrosecondsPerMessage\":%.2f}\n", cpu, per_message_us);
            fclose(out);
        }
    }
    js_DeleteStream(js, stream, NULL, NULL);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return bad > 0 ? 1 : 0;
}
