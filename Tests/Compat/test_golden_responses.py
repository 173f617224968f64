"""Golden bytes for responses: every API and version the broker
advertises is asked for with kafka-python's own request classes, and the
broker's answer, decoded by kafka-python (whose codecs are generated from
Kafka's JSON message schemas, an implementation independent of ours),
must re-encode to exactly the bytes the broker sent, with nothing left
over. A field the broker wrote in the wrong place, width, nullability or
version shows up as a byte difference."""
import socket
import struct
import uuid

import pytest
from kafka.protocol.admin import (AlterConfigsRequest, CreateAclsRequest, CreatePartitionsRequest, CreateTopicsRequest, DeleteAclsRequest,
                                  DeleteGroupsRequest, DeleteRecordsRequest, DeleteTopicsRequest, DescribeAclsRequest, DescribeClusterRequest,
                                  DescribeConfigsRequest, DescribeGroupsRequest, DescribeLogDirsRequest, DescribeProducersRequest,
                                  IncrementalAlterConfigsRequest, ListGroupsRequest)
from kafka.protocol.admin import AlterPartitionReassignmentsRequest, ElectLeadersRequest, ListPartitionReassignmentsRequest
from kafka.protocol.consumer import (FetchRequest, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, ListOffsetsRequest,
                                     OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest, OffsetForLeaderEpochRequest,
                                     SyncGroupRequest)
from kafka.protocol.metadata import ApiVersionsRequest, FindCoordinatorRequest, MetadataRequest
from kafka.protocol.producer import InitProducerIdRequest, ProduceRequest
from kafka.protocol.api_header import ResponseClassRegistry
from kafka.record.default_records import DefaultRecordBatchBuilder

from conftest import unique

TOPIC = unique("golden")


def batch():
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                        producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    builder.append(0, timestamp=1_700_000_000_000, key=b"room-1", value=b"hello", headers=[])
    return bytes(builder.build())


def requests(version_of):
    """(name, request class, versions, builder(version)) for every API the broker speaks."""
    F = FetchRequest
    LO = ListOffsetsRequest
    OC = OffsetCommitRequest
    OF = OffsetFetchRequest
    OFLE = OffsetForLeaderEpochRequest
    CT = CreateTopicsRequest
    DC = DescribeConfigsRequest
    P = ProduceRequest
    return [
        ("ApiVersions", ApiVersionsRequest, lambda v: ApiVersionsRequest[v](client_software_name="golden", client_software_version="1")),
        ("Metadata", MetadataRequest, lambda v: MetadataRequest[v](
            topics=[MetadataRequest.MetadataRequestTopic(name=TOPIC)], allow_auto_topic_creation=True,
            include_cluster_authorized_operations=False, include_topic_authorized_operations=False)),
        ("Produce", ProduceRequest, lambda v: ProduceRequest[v](
            transactional_id=None, acks=-1, timeout_ms=5000,
            topic_data=[P.TopicProduceData(name=TOPIC, partition_data=[P.TopicProduceData.PartitionProduceData(index=0, records=batch())])])),
        ("Fetch", FetchRequest, lambda v: FetchRequest[v](
            replica_id=-1, max_wait_ms=0, min_bytes=0, max_bytes=1 << 20, isolation_level=0, session_id=0, session_epoch=-1,
            topics=[F.FetchTopic(topic=TOPIC, partitions=[F.FetchTopic.FetchPartition(
                partition=0, current_leader_epoch=-1, fetch_offset=0, log_start_offset=-1, partition_max_bytes=1 << 20)])],
            forgotten_topics_data=[], rack_id="")),
        ("ListOffsets", ListOffsetsRequest, lambda v: ListOffsetsRequest[v](
            replica_id=-1, isolation_level=0,
            topics=[LO.ListOffsetsTopic(name=TOPIC, partitions=[LO.ListOffsetsTopic.ListOffsetsPartition(
                partition_index=0, current_leader_epoch=-1, timestamp=-1)])])),
        ("FindCoordinator", FindCoordinatorRequest, lambda v: FindCoordinatorRequest[v](key="golden-group", key_type=0)),
        ("CreateTopics", CreateTopicsRequest, lambda v: CreateTopicsRequest[v](
            topics=[CT.CreatableTopic(name=unique("golden-created") + "-%d" % v, num_partitions=1, replication_factor=1, assignments=[], configs=[])],
            timeout_ms=5000, validate_only=False)),
        ("DeleteTopics", DeleteTopicsRequest, lambda v: DeleteTopicsRequest[v](topic_names=["golden-missing-%d" % v], timeout_ms=5000)),
        ("InitProducerId", InitProducerIdRequest, lambda v: InitProducerIdRequest[v](transactional_id=None, transaction_timeout_ms=60000)),
        ("OffsetForLeaderEpoch", OffsetForLeaderEpochRequest, lambda v: OffsetForLeaderEpochRequest[v](
            replica_id=-1,
            topics=[OFLE.OffsetForLeaderTopic(topic=TOPIC, partitions=[OFLE.OffsetForLeaderTopic.OffsetForLeaderPartition(
                partition=0, current_leader_epoch=-1, leader_epoch=0)])])),
        # A fresh group per version: v4 and later answer MEMBER_ID_REQUIRED at once, earlier ones after the join round.
        ("JoinGroup", JoinGroupRequest, lambda v: JoinGroupRequest[v](
            group_id=unique("golden-join") + "-%d" % v, session_timeout_ms=10000, rebalance_timeout_ms=10000, member_id="",
            group_instance_id=None, protocol_type="consumer",
            protocols=[JoinGroupRequest.JoinGroupRequestProtocol(name="range", metadata=b"\x00\x01")])),
        ("SyncGroup", SyncGroupRequest, lambda v: SyncGroupRequest[v](
            group_id="golden-group", generation_id=1, member_id="nobody", group_instance_id=None,
            protocol_type=None, protocol_name=None, assignments=[])),
        ("Heartbeat", HeartbeatRequest, lambda v: HeartbeatRequest[v](group_id="golden-group", generation_id=1, member_id="nobody", group_instance_id=None)),
        ("LeaveGroup", LeaveGroupRequest, lambda v: LeaveGroupRequest[v](group_id="golden-group", member_id="nobody")),
        ("OffsetCommit", OffsetCommitRequest, lambda v: OffsetCommitRequest[v](
            group_id="golden-group", generation_id_or_member_epoch=-1, member_id="", group_instance_id=None, retention_time_ms=-1,
            topics=[OC.OffsetCommitRequestTopic(name=TOPIC, partitions=[OC.OffsetCommitRequestTopic.OffsetCommitRequestPartition(
                partition_index=0, committed_offset=1, committed_leader_epoch=-1, commit_timestamp=-1, committed_metadata="")])])),
        ("OffsetFetch", OffsetFetchRequest, lambda v: OffsetFetchRequest[v](
            group_id="golden-group", require_stable=False,
            topics=[OF.OffsetFetchRequestTopic(name=TOPIC, partition_indexes=[0])])),
        ("DescribeGroups", DescribeGroupsRequest, lambda v: DescribeGroupsRequest[v](groups=["golden-group"], include_authorized_operations=False)),
        ("ListGroups", ListGroupsRequest, lambda v: ListGroupsRequest[v]()),
        ("DescribeConfigs", DescribeConfigsRequest, lambda v: DescribeConfigsRequest[v](
            resources=[DC.DescribeConfigsResource(resource_type=2, resource_name=TOPIC, configuration_keys=None)],
            include_synonyms=True, include_documentation=True)),
        ("AlterConfigs", AlterConfigsRequest, lambda v: AlterConfigsRequest[v](
            resources=[AlterConfigsRequest.AlterConfigsResource(resource_type=2, resource_name=TOPIC, configs=[
                AlterConfigsRequest.AlterConfigsResource.AlterableConfig(name="retention.ms", value="86400000")])],
            validate_only=False)),
        ("IncrementalAlterConfigs", IncrementalAlterConfigsRequest, lambda v: IncrementalAlterConfigsRequest[v](
            resources=[IncrementalAlterConfigsRequest.AlterConfigsResource(resource_type=2, resource_name=TOPIC, configs=[
                IncrementalAlterConfigsRequest.AlterConfigsResource.AlterableConfig(name="retention.ms", config_operation=0, value="86400000"),
                IncrementalAlterConfigsRequest.AlterConfigsResource.AlterableConfig(name="no.such.config", config_operation=0, value="1")])],
            validate_only=False)),
        ("DeleteRecords", DeleteRecordsRequest, lambda v: DeleteRecordsRequest[v](
            topics=[DeleteRecordsRequest.DeleteRecordsTopic(name=TOPIC, partitions=[
                DeleteRecordsRequest.DeleteRecordsTopic.DeleteRecordsPartition(partition_index=0, offset=0),
                DeleteRecordsRequest.DeleteRecordsTopic.DeleteRecordsPartition(partition_index=7, offset=0)])], timeout_ms=5000)),
        # A topic grown once (v0), then asked again for what it has: INVALID_PARTITIONS with a message.
        ("CreatePartitions", CreatePartitionsRequest, lambda v: CreatePartitionsRequest[v](
            topics=[CreatePartitionsRequest.CreatePartitionsTopic(name=TOPIC, count=2, assignments=None)], timeout_ms=5000, validate_only=False)),
        ("DeleteGroups", DeleteGroupsRequest, lambda v: DeleteGroupsRequest[v](groups_names=["golden-no-such-group"])),
        ("OffsetDelete", OffsetDeleteRequest, lambda v: OffsetDeleteRequest[v](group_id="golden-group", topics=[
            OffsetDeleteRequest.OffsetDeleteRequestTopic(name=TOPIC, partitions=[OffsetDeleteRequest.OffsetDeleteRequestTopic.OffsetDeleteRequestPartition(partition_index=0)])])),
        ("DescribeLogDirs", DescribeLogDirsRequest, lambda v: DescribeLogDirsRequest[v](topics=None)),
        ("DescribeCluster", DescribeClusterRequest, lambda v: DescribeClusterRequest[v](include_cluster_authorized_operations=False, endpoint_type=1)),
        ("DescribeProducers", DescribeProducersRequest, lambda v: DescribeProducersRequest[v](
            topics=[DescribeProducersRequest.TopicRequest(name=TOPIC, partition_indexes=[0])])),
        # A single node leads every partition already (ELECTION_NOT_NEEDED),
        # has nowhere to move one (INVALID_REPLICA_ASSIGNMENT) and no moves.
        ("ElectLeaders", ElectLeadersRequest, lambda v: ElectLeadersRequest[v](
            election_type=0, topic_partitions=[ElectLeadersRequest.TopicPartitions(topic=TOPIC, partitions=[0])], timeout_ms=5000)),
        ("AlterPartitionReassignments", AlterPartitionReassignmentsRequest, lambda v: AlterPartitionReassignmentsRequest[v](
            timeout_ms=5000, topics=[AlterPartitionReassignmentsRequest.ReassignableTopic(name=TOPIC, partitions=[
                AlterPartitionReassignmentsRequest.ReassignableTopic.ReassignablePartition(partition_index=0, replicas=[1, 2])])])),
        ("ListPartitionReassignments", ListPartitionReassignmentsRequest, lambda v: ListPartitionReassignmentsRequest[v](timeout_ms=5000, topics=None)),
        # Without --authorizer these answer SECURITY_DISABLED (test_acls.py runs them with one).
        ("CreateAcls", CreateAclsRequest, lambda v: CreateAclsRequest[v](creations=[CreateAclsRequest[v].AclCreation(
            resource_type=2, resource_name=TOPIC, resource_pattern_type=3, principal="User:golden", host="*", operation=3, permission_type=3)])),
        ("DescribeAcls", DescribeAclsRequest, lambda v: DescribeAclsRequest[v](
            resource_type_filter=1, resource_name_filter=None, pattern_type_filter=1, principal_filter=None, host_filter=None, operation=1, permission_type=1)),
        ("DeleteAcls", DeleteAclsRequest, lambda v: DeleteAclsRequest[v](filters=[DeleteAclsRequest[v].DeleteAclsFilter(
            resource_type_filter=2, resource_name_filter=TOPIC, pattern_type_filter=3, principal_filter=None, host_filter=None, operation=1, permission_type=1)])),
    ]


def response_class(request_class, version):
    """kafka-python's response class for a request class and version."""
    return ResponseClassRegistry._response_class_registry[request_class.API_KEY][version]


def advertised(broker):
    """The broker's ApiVersions answer: {api key: (min, max)}."""
    request = ApiVersionsRequest[3](client_software_name="golden", client_software_version="1")
    response = exchange(broker, request, 3)
    return {key.api_key: (key.min_version, key.max_version) for key in response.api_keys}


def raw_exchange(broker, request, version, correlation=42):
    request.with_header(correlation_id=correlation, client_id="golden")
    frame = request.encode(version=version, header=True, framed=True)
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as s:
        s.sendall(frame)
        return read_frame(s)


def read_frame(s):
    """One size-prefixed answer from the socket, size included."""
    data = b""
    while len(data) < 4 or len(data) < 4 + struct.unpack(">i", data[:4])[0]:
        chunk = s.recv(1 << 16)
        assert chunk, "the broker closed the connection"
        data += chunk
    return data


def exchange(broker, request, version):
    data = raw_exchange(broker, request, version)
    return response_class(type(request), version).decode(data, header=True, framed=True)


def decoded_exactly(cls, version, data, *context):
    """The answer as kafka-python decodes it, once it re-encodes to exactly
    the bytes the broker sent."""
    decoded = response_class(cls, version).decode(data, header=True, framed=True)
    decoded.with_header(correlation_id=42)
    assert bytes(decoded.encode(header=True, framed=True)) == data, (cls.__name__, version, data.hex(), *context)
    return decoded


def error_codes(value):
    """Every error_code in a decoded answer, at any depth."""
    if isinstance(value, dict):
        return [c for k, v in value.items() for c in ([v] if k == "error_code" else error_codes(v))]
    if isinstance(value, list):
        return [c for v in value for c in error_codes(v)]
    return []


CASES = [(name, cls, build) for name, cls, build in requests(None)]


@pytest.mark.parametrize("name,cls,build", CASES, ids=[c[0] for c in CASES])
def test_every_version_of_every_answer_matches_kafkas_schema_byte_for_byte(broker, name, cls, build):
    ranges = advertised(broker)
    assert cls.API_KEY in ranges, "%s is not advertised" % name
    low, high = ranges[cls.API_KEY]
    if name == "Produce":
        low = 3  # v0-2 are advertised but answered with UNSUPPORTED_VERSION in a v0-2 body; checked below too
    checked = []
    for version in range(low, high + 1):
        request = build(version)
        data = raw_exchange(broker, request, version)
        decoded = response_class(cls, version).decode(data, header=True, framed=True)
        decoded.with_header(correlation_id=42)
        again = bytes(decoded.encode(header=True, framed=True))
        assert again == data, "%s v%d: kafka-python re-encodes %d bytes, the broker sent %d:\n broker %s\n kafka  %s" % (
            name, version, len(again), len(data), data.hex(), again.hex())
        checked.append(version)
    assert checked == list(range(low, high + 1))


def test_refused_produce_versions_answer_in_their_own_schema(broker):
    for version in range(0, 3):
        request = ProduceRequest[version](transactional_id=None, acks=-1, timeout_ms=5000, topic_data=[
            ProduceRequest.TopicProduceData(name=TOPIC, partition_data=[ProduceRequest.TopicProduceData.PartitionProduceData(index=0, records=batch())])])
        decoded = decoded_exactly(ProduceRequest, version, raw_exchange(broker, request, version))
        assert decoded.responses[0].partition_responses[0].error_code == 35


def test_every_advertised_api_has_a_golden_case(broker):
    # SASL's two APIs are advertised only with --sasl (test_sasl.py runs them with real clients).
    assert set(advertised(broker)) == {cls.API_KEY for _, cls, _ in CASES}


@pytest.mark.parametrize("name,versions", [("Fetch", range(0, 4)), ("ListOffsets", range(0, 1)), ("OffsetForLeaderEpoch", range(0, 2))])
def test_old_versions_are_answered_in_their_own_schema_with_unsupported_version(broker, name, versions):
    """Versions below the advertised range get UNSUPPORTED_VERSION per
    partition in a response their client decodes byte for byte, not a
    closed connection."""
    cls, build = next((c, b) for n, c, b in CASES if n == name)
    for version in versions:
        decoded = decoded_exactly(cls, version, raw_exchange(broker, build(version), version), name)
        assert set(error_codes(decoded.to_dict())) == {35}, (name, version, decoded)


def test_offset_commit_v0_and_v1_round_trip_as_sarama_sends_them(broker):
    """Go services on sarama's defaults commit with OffsetCommit v1 (v0 for
    the oldest settings) outside any group generation, and read back with
    OffsetFetch v0/v1: the offsets are kept and read back, and Kafka clients
    of today see them too (OffsetFetch v5)."""
    OC, OF = OffsetCommitRequest, OffsetFetchRequest
    group = unique("sarama-group")
    exchange(broker, MetadataRequest[4](topics=[MetadataRequest.MetadataRequestTopic(name=TOPIC)], allow_auto_topic_creation=True), 4)
    for version, offset in ((1, 17), (0, 23)):
        request = OC[version](group_id=group, generation_id_or_member_epoch=-1, member_id="", group_instance_id=None, retention_time_ms=-1,
                              topics=[OC.OffsetCommitRequestTopic(name=TOPIC, partitions=[OC.OffsetCommitRequestTopic.OffsetCommitRequestPartition(
                                  partition_index=0, committed_offset=offset, committed_leader_epoch=-1, commit_timestamp=-1, committed_metadata="v%d" % version)])])
        response = exchange(broker, request, version)
        assert [p.error_code for t in response.topics for p in t.partitions] == [0]
        for fetch_version in (0, 1, 5):
            fetched = exchange(broker, OF[fetch_version](group_id=group, require_stable=False,
                                                         topics=[OF.OffsetFetchRequestTopic(name=TOPIC, partition_indexes=[0])]), fetch_version)
            partition = fetched.topics[0].partitions[0]
            assert (partition.committed_offset, partition.metadata, partition.error_code) == (offset, "v%d" % version, 0), (version, fetch_version, fetched)


def newer_request(name, build, version):
    """The request at a version above the broker's, with the fields that
    version asks for where they replace older ones (topic ids, batched
    coordinator keys, groups of OffsetFetch)."""
    P, OC, OF, DT = ProduceRequest, OffsetCommitRequest, OffsetFetchRequest, DeleteTopicsRequest
    some_id = uuid.UUID(int=0x5057)
    if name == "Produce" and version >= 13:
        return P[version](transactional_id=None, acks=-1, timeout_ms=5000, topic_data=[
            P.TopicProduceData(topic_id=some_id, partition_data=[P.TopicProduceData.PartitionProduceData(index=0, records=batch())])])
    if name == "OffsetCommit" and version >= 10:
        return OC[version](group_id="golden-group", generation_id_or_member_epoch=-1, member_id="", group_instance_id=None,
                           topics=[OC.OffsetCommitRequestTopic(topic_id=some_id, partitions=[OC.OffsetCommitRequestTopic.OffsetCommitRequestPartition(
                               partition_index=0, committed_offset=1, committed_leader_epoch=-1, committed_metadata="")])])
    if name == "OffsetFetch" and version >= 8:
        G = OF.OffsetFetchRequestGroup
        topic = G.OffsetFetchRequestTopics(topic_id=some_id, partition_indexes=[0]) if version >= 10 else G.OffsetFetchRequestTopics(name=TOPIC, partition_indexes=[0])
        return OF[version](groups=[G(group_id="golden-group", member_id=None, member_epoch=-1, topics=[topic]),
                                   G(group_id="golden-other", member_id=None, member_epoch=-1, topics=None)], require_stable=False)
    if name == "FindCoordinator" and version >= 4:
        return FindCoordinatorRequest[version](key_type=0, coordinator_keys=["golden-group", "golden-other"])
    if name == "DeleteTopics" and version >= 6:
        return DT[version](topics=[DT.DeleteTopicState(name="golden-missing", topic_id=uuid.UUID(int=0)),
                                   DT.DeleteTopicState(name=None, topic_id=some_id)], timeout_ms=5000)
    return build(version)


@pytest.mark.parametrize("name,cls,build", CASES, ids=[c[0] for c in CASES])
def test_newer_versions_are_answered_in_their_own_schema_with_unsupported_version(broker, name, cls, build):
    """Every version Kafka defines above the broker's highest (kafka-python's
    codecs know them all) gets UNSUPPORTED_VERSION wherever that version's
    schema carries errors, in bytes kafka-python decodes and re-encodes
    exactly, on a connection that stays open for the next request."""
    high = advertised(broker)[cls.API_KEY][1]
    assert high <= cls.max_version, "%s: the broker serves v%d, above Kafka's v%d" % (name, high, cls.max_version)
    for version in range(high + 1, cls.max_version + 1):
        request = newer_request(name, build, version)
        request.with_header(correlation_id=42, client_id="golden")
        with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as s:
            s.sendall(request.encode(version=version, header=True, framed=True))
            decoded = decoded_exactly(cls, version, read_frame(s), name)
            codes = error_codes(decoded.to_dict())
            assert codes and set(codes) == {35}, (name, version, decoded)
            # The same connection answers the next request.
            follow = ApiVersionsRequest[0]()
            follow.with_header(correlation_id=43, client_id="golden")
            s.sendall(follow.encode(version=0, header=True, framed=True))
            assert response_class(ApiVersionsRequest, 0).decode(read_frame(s), header=True, framed=True).error_code == 0
    assert broker.alive()


def test_a_newer_produce_with_acks_0_closes_its_connection(broker):
    """A producer with acks=0 reads no answer, so one in Produce v9's schema
    would be taken for the answer to something else: its connection closes
    instead (how Kafka tells an acks=0 producer of an error), with the reason
    in the log, and nothing is written."""
    before = exchange(broker, ListOffsetsRequest[5](replica_id=-1, isolation_level=0, topics=[
        ListOffsetsRequest.ListOffsetsTopic(name=TOPIC, partitions=[ListOffsetsRequest.ListOffsetsTopic.ListOffsetsPartition(
            partition_index=0, current_leader_epoch=-1, timestamp=-1)])]), 5).topics[0].partitions[0].offset
    request = ProduceRequest[9](transactional_id=None, acks=0, timeout_ms=5000, topic_data=[
        ProduceRequest.TopicProduceData(name=TOPIC, partition_data=[ProduceRequest.TopicProduceData.PartitionProduceData(index=0, records=batch())])])
    request.with_header(correlation_id=42, client_id="golden")
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as s:
        s.sendall(request.encode(version=9, header=True, framed=True))
        assert s.recv(1 << 16) == b""
    after = exchange(broker, ListOffsetsRequest[5](replica_id=-1, isolation_level=0, topics=[
        ListOffsetsRequest.ListOffsetsTopic(name=TOPIC, partitions=[ListOffsetsRequest.ListOffsetsTopic.ListOffsetsPartition(
            partition_index=0, current_leader_epoch=-1, timestamp=-1)])]), 5).topics[0].partitions[0].offset
    assert after == before
    assert "Produce version 9 is not supported" in broker.read_log() or "produce version 9 is not supported" in broker.read_log()
