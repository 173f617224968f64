/*
 * rdkafka-bench: producer ack latency and end-to-end latency as librdkafka
 * (Debian's librdkafka-dev) sees them, against any Kafka broker.
 *
 *   rdkafka-bench --brokers 127.0.0.1:9092 --topic bench --rate 20000 \
 *       --seconds 10 --linger-ms 5 [--e2e] [--server-pid PID]... [--json FILE]
 *       [--stats FILE]
 *
 * One idempotent producer, acks=all, values of --size bytes keyed over
 * --keys conversations. --rate paces sends on an absolute schedule
 * (0: as fast as the client takes them, for the peak). Ack latency is the
 * produce() call to the delivery report; a thread of its own serves the
 * reports so their time is the ack, not our polling. With --e2e a consumer
 * in a group reads the topic in the same process and the latency is the
 * produce() call to the message's arrival (both on CLOCK_MONOTONIC, carried
 * in the value). Bounded: --seconds of sending, at most --count messages,
 * then at most 10 s for the last reports.
 *
 * Prints one summary line and writes the figures as JSON. --stats FILE
 * appends librdkafka's own statistics (statistics.interval.ms=1000), one
 * JSON object a line: per broker the request round trip (`rtt`), the time
 * records wait for a request (`int_latency`) and the requests awaiting an
 * answer (`waitresp_cnt`), which tell the client's part of a latency from
 * the broker's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench-common.h"

static const char *brokers = "127.0.0.1:9092";
static const char *topic = "rdkafka-bench";
static const char *json_path = NULL;
static FILE *stats_file = NULL;
static const char *label = "kafka";
static double rate = 20000;
static double seconds = 10;
static long count_max = 5000000;
static int linger_ms = 5;
static int size = 1024;
static int keys = 10000;
static int partitions = 4;
static int replicas = 1;
static int e2e = 0;
static int server_pids[8];
static int server_pid_count = 0;

/* Latencies in microseconds, one slot per message sent. */
static uint32_t *ack_us, *e2e_us;
static int64_t *sent_at;
static atomic_long acked, failed, received;
static atomic_int sending_done;
static rd_kafka_t *producer;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *message, void *opaque) {
    (void)rk;
    (void)opaque;
    long index = (long)(intptr_t)message->_private;
    if (message->err) {
        atomic_fetch_add(&failed, 1);
        static atomic_int reported;
        if (atomic_fetch_add(&reported, 1) < 5) fprintf(stderr, "delivery failed: %s\n", rd_kafka_err2str(message->err));
        return;
    }
    int64_t latency = (now_ns() - sent_at[index]) / 1000;
    ack_us[index] = latency > UINT32_MAX ? UINT32_MAX : (uint32_t)latency;
    atomic_fetch_add(&acked, 1);
}

static void *serve_reports(void *unused) {
    (void)unused;
    while (!atomic_load(&sending_done) || rd_kafka_outq_len(producer) > 0) rd_kafka_poll(producer, 100);
    return NULL;
}

static long total_sent;

static void *consume(void *arg) {
    rd_kafka_t *consumer = arg;
    int64_t give_up = 0;
    while (1) {
        rd_kafka_message_t *message = rd_kafka_consumer_poll(consumer, 100);
        if (atomic_load(&sending_done)) {
            if (give_up == 0) give_up = now_ns() + 10 * 1000000000LL;
            if (atomic_load(&received) >= total_sent || now_ns() > give_up) {
                if (message) rd_kafka_message_destroy(message);
                break;
            }
        }
        if (!message) continue;
        if (!message->err && message->len >= 16) {
            int64_t sent;
            long index;
            memcpy(&sent, message->payload, 8);
            memcpy(&index, (char *)message->payload + 8, 8);
            if (index >= 0 && index < count_max) {
                int64_t latency = (now_ns() - sent) / 1000;
                e2e_us[index] = latency > UINT32_MAX ? UINT32_MAX : (uint32_t)latency;
                atomic_fetch_add(&received, 1);
            }
        }
        rd_kafka_message_destroy(message);
    }
    return NULL;
}

/* Called from rd_kafka_poll in the reports thread, once a second. */
static int on_statistics(rd_kafka_t *rk, char *json, size_t length, void *opaque) {
    (void)rk;
    (void)opaque;
    fwrite(json, 1, length, stats_file);
    fputc('\n', stats_file);
    return 0;
}

static void set(rd_kafka_conf_t *conf, const char *name, const char *value) {
    char error[512];
    if (rd_kafka_conf_set(conf, name, value, error, sizeof error) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "%s=%s: %s\n", name, value, error);
        exit(2);
    }
}

static void create_topic(void) {
    char error[512];
    rd_kafka_NewTopic_t *new_topic = rd_kafka_NewTopic_new(topic, partitions, replicas, error, sizeof error);
    rd_kafka_queue_t *queue = rd_kafka_queue_new(producer);
    rd_kafka_CreateTopics(producer, &new_topic, 1, NULL, queue);
    rd_kafka_event_t *event = rd_kafka_queue_poll(queue, 15000);
    if (event) {
        const rd_kafka_CreateTopics_result_t *result = rd_kafka_event_CreateTopics_result(event);
        size_t n = 0;
        const rd_kafka_topic_result_t **topics = result ? rd_kafka_CreateTopics_result_topics(result, &n) : NULL;
        if (n == 1 && rd_kafka_topic_result_error(topics[0]) && rd_kafka_topic_result_error(topics[0]) != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
            fprintf(stderr, "create topic: %s\n", rd_kafka_topic_result_error_string(topics[0]));
        rd_kafka_event_destroy(event);
    }
    rd_kafka_queue_destroy(queue);
    rd_kafka_NewTopic_destroy(new_topic);
}

/* Client settings from -X name=value (security.protocol, sasl.*, ssl.*),
   for the producer and the consumer alike. */
static const char *extra[32];
static int extra_count = 0;

static void set_extra(rd_kafka_conf_t *conf) {
    for (int i = 0; i < extra_count; i++) {
        char name[256];
        const char *equals = strchr(extra[i], '=');
        if (!equals || equals - extra[i] >= (long)sizeof name) { fprintf(stderr, "-X %s: not name=value\n", extra[i]); exit(2); }
        memcpy(name, extra[i], equals - extra[i]);
        name[equals - extra[i]] = 0;
        set(conf, name, equals + 1);
    }
}

static void usage(void) {
    fprintf(stderr, "usage: rdkafka-bench --brokers HOST:PORT --topic NAME [--rate N] [--seconds S] [--count N] [--linger-ms N]\n"
                    "       [--size BYTES] [--keys N] [--partitions N] [--replicas N] [--e2e] [--server-pid PID]... [--label L] [--json FILE] [--stats FILE]\n"
                    "       [-X name=value]...\n");
    exit(2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--e2e")) { e2e = 1; continue; }
        if (!v) usage();
        if (!strcmp(a, "--brokers")) brokers = v;
        else if (!strcmp(a, "--topic")) topic = v;
        else if (!strcmp(a, "--rate")) rate = atof(v);
        else if (!strcmp(a, "--seconds")) seconds = atof(v);
        else if (!strcmp(a, "--count")) count_max = atol(v);
        else if (!strcmp(a, "--linger-ms")) linger_ms = atoi(v);
        else if (!strcmp(a, "--size")) size = atoi(v);
        else if (!strcmp(a, "--keys")) keys = atoi(v);
        else if (!strcmp(a, "--partitions")) partitions = atoi(v);
        else if (!strcmp(a, "--replicas")) replicas = atoi(v);
        else if (!strcmp(a, "--label")) label = v;
        else if (!strcmp(a, "--json")) json_path = v;
        else if (!strcmp(a, "--stats")) {
            stats_file = fopen(v, "a");
            if (!stats_file) { perror(v); return 2; }
        }
        else if (!strcmp(a, "--server-pid") && server_pid_count < 8) server_pids[server_pid_count++] = atoi(v);
        else if (!strcmp(a, "-X") && extra_count < 32) extra[extra_count++] = v;
        else usage();
        i++;
    }
    if (size < 16 || count_max < 1 || seconds <= 0 || seconds > 600) usage();
    ack_us = calloc(count_max, sizeof(uint32_t));
    e2e_us = calloc(count_max, sizeof(uint32_t));
    sent_at = calloc(count_max, sizeof(int64_t));
    if (!ack_us || !e2e_us || !sent_at) return 1;

    char text[32], error[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    set(conf, "bootstrap.servers", brokers);
    set(conf, "enable.idempotence", "true");
    set(conf, "acks", "all");
    snprintf(text, sizeof text, "%d", linger_ms);
    set(conf, "linger.ms", text);
    set(conf, "queue.buffering.max.messages", "1000000");
    set_extra(conf);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    if (stats_file) {
        set(conf, "statistics.interval.ms", "1000");
        rd_kafka_conf_set_stats_cb(conf, on_statistics);
    }
    producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof error);
    if (!producer) { fprintf(stderr, "producer: %s\n", error); return 1; }
    create_topic();

    rd_kafka_t *consumer = NULL;
    pthread_t consumer_thread;
    if (e2e) {
        rd_kafka_conf_t *cconf = rd_kafka_conf_new();
        set(cconf, "bootstrap.servers", brokers);
        snprintf(text, sizeof text, "rdkafka-bench-%d", (int)getpid());
        set(cconf, "group.id", text);
        set(cconf, "auto.offset.reset", "latest");
        set(cconf, "enable.auto.commit", "true");
        /* Deliver at once rather than waiting to fill a fetch. */
        set(cconf, "fetch.wait.max.ms", "100");
        set(cconf, "fetch.min.bytes", "1");
        set_extra(cconf);
        consumer = rd_kafka_new(RD_KAFKA_CONSUMER, cconf, error, sizeof error);
        if (!consumer) { fprintf(stderr, "consumer: %s\n", error); return 1; }
        rd_kafka_poll_set_consumer(consumer);
        rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(topics, topic, RD_KAFKA_PARTITION_UA);
        rd_kafka_subscribe(consumer, topics);
        rd_kafka_topic_partition_list_destroy(topics);
        /* Wait (bounded) for the group to assign the partitions. */
        int64_t until = now_ns() + 30 * 1000000000LL;
        while (now_ns() < until) {
            rd_kafka_topic_partition_list_t *assigned = NULL;
            rd_kafka_message_t *m = rd_kafka_consumer_poll(consumer, 100);
            if (m) rd_kafka_message_destroy(m);
            if (rd_kafka_assignment(consumer, &assigned) == 0 && assigned && assigned->cnt == partitions) {
                rd_kafka_topic_partition_list_destroy(assigned);
                break;
            }
            if (assigned) rd_kafka_topic_partition_list_destroy(assigned);
        }
        pthread_create(&consumer_thread, NULL, consume, consumer);
    }

    /* A short warm-up: connections, the producer id, metadata. */
    char *value = calloc(1, size);
    for (int i = 0; i < 100; i++) {
        long warm = -1;
        memset(value, 0, 16);
        memcpy(value + 8, &warm, 8);
        rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY("warm", 4), RD_KAFKA_V_VALUE(value, size), RD_KAFKA_V_END);
    }
    rd_kafka_flush(producer, 10000);
    memset(ack_us, 0, count_max * sizeof(uint32_t));
    atomic_store(&acked, 0);
    atomic_store(&failed, 0);

    pthread_t reports;
    pthread_create(&reports, NULL, serve_reports, NULL);
    double cpu_before = server_cpu(server_pids, server_pid_count);
    int64_t start = now_ns(), end = start + (int64_t)(seconds * 1e9);
    long sent = 0;
    char key[32];
    unsigned seed = 42;
    while (sent < count_max) {
        if (now_ns() >= end) break;
        pace(start, sent, rate);
        int key_length = snprintf(key, sizeof key, "conversation-%d", (int)(rand_r(&seed) % keys));
        sent_at[sent] = now_ns();
        memcpy(value, &sent_at[sent], 8);
        memcpy(value + 8, &sent, 8);
        rd_kafka_resp_err_t err;
        while ((err = rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key_length), RD_KAFKA_V_VALUE(value, size),
                                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE((void *)(intptr_t)sent), RD_KAFKA_V_END))
               == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            /* The client's queue is full (a closed loop): let reports drain. */
            struct timespec pause = {0, 100000};
            nanosleep(&pause, NULL);
            if (now_ns() >= end + 10 * 1000000000LL) break;
        }
        if (err) { fprintf(stderr, "produce: %s\n", rd_kafka_err2str(err)); break; }
        sent++;
    }
    int64_t sending_ended = now_ns();
    total_sent = sent;
    rd_kafka_flush(producer, 10000);
    atomic_store(&sending_done, 1);
    pthread_join(reports, NULL);
    double cpu = server_cpu(server_pids, server_pid_count) - cpu_before;
    if (e2e) {
        pthread_join(consumer_thread, NULL);
        rd_kafka_consumer_close(consumer);
        rd_kafka_destroy(consumer);
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
            fprintf(out, "{\"label\":\"%s\",\"client\":\"librdkafka %s\",\"rate\":%.0f,\"lingerMs\":%d,\"sent\":%ld,\"acked\":%ld,\"failed\":%ld,"
                         "\"sendsPerSecond\":%.1f,\"ackMilliseconds\":{\"p50\":%.3f,\"p99\":%.3f,\"p99.9\":%.3f,\"max\":%.3f},",
                    label, rd_kafka_version_str(), rate, linger_ms, sent, ok, bad, (double)sent / elapsed, ack[0], ack[1], ack[2], ack[3]);
            if (e2e) fprintf(out, "\"received\":%ld,\"e2eMilliseconds\":{\"p50\":%.3f,\"p99\":%.3f,\"p99.9\":%.3f,\"max\":%.3f},", got, endtoend[0], endtoend[1], endtoend[2], endtoend[3]);
            fprintf(out, "\"serverCPUSeconds\":%.3f,\"serverCPUMicrosecondsPerMessage\":%.2f}\n", cpu, per_message_us);
            fclose(out);
        }
    }
    rd_kafka_destroy(producer);
    if (stats_file) fclose(stats_file);
    return bad > 0 ? 1 : 0;
}
