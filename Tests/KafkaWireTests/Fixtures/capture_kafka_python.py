"""Writes record batches built by kafka-python's own batch encoder.

kafka-python is a real Kafka client; DefaultRecordBatchBuilder is the code its
producer uses to encode every batch it sends. This script captures one batch
per compression codec, plus an idempotent batch, with the records each holds
written beside it as JSON so the Swift tests can compare what they decode.

Captured with (from the repository root):
    python3 -m venv .venv
    .venv/bin/pip install kafka-python==3.0.12 lz4 python-snappy zstandard cramjam
    .venv/bin/python Tests/KafkaWireTests/Fixtures/capture_kafka_python.py
"""
import json
import os
from kafka.record.default_records import DefaultRecordBatchBuilder

HERE = os.path.dirname(os.path.abspath(__file__))
CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def build(codec_id, producer_id=-1, producer_epoch=-1, base_sequence=-1):
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=codec_id, is_transactional=False,
        producer_id=producer_id, producer_epoch=producer_epoch,
        base_sequence=base_sequence, batch_size=1 << 20)
    records = []
    for i in range(20):
        key = ("conversation-%d" % (i % 3)).encode()
        value = ("message %d " % i).encode() * 8
        headers = [("trace", ("t%d" % i).encode())] if i % 2 == 0 else []
        timestamp = 1_795_000_000_000 + i
        builder.append(i, timestamp=timestamp, key=key, value=value, headers=headers)
        records.append({"key": key.decode(), "value": value.decode(), "timestamp": timestamp,
                        "headers": [[k, v.decode()] for k, v in headers]})
    return bytes(builder.build()), records


def main():
    for name, codec_id in CODECS.items():
        data, records = build(codec_id)
        with open(os.path.join(HERE, "kafka-python-%s.bin" % name), "wb") as f:
            f.write(data)
        with open(os.path.join(HERE, "kafka-python-%s.json" % name), "w") as f:
            json.dump(records, f, indent=1)
    data, records = build(0, producer_id=4242, producer_epoch=3, base_sequence=17)
    with open(os.path.join(HERE, "kafka-python-idempotent.bin"), "wb") as f:
        f.write(data)
    with open(os.path.join(HERE, "kafka-python-idempotent.json"), "w") as f:
        json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
