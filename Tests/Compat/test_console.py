"""The operator console at / of the operations port, in a real browser:
Debian's headless Chromium driven by selenium. It loads with no console
error and nothing from outside the broker, shows a topic just made, a
consumer group's lag moving as records arrive and are committed, the
throughput chart drawing, the chat's rooms, and the broker's recent events. With TLS on the
operations port and the authorizer on, it asks for a login that only a
principal allowed Describe on the cluster passes."""
import base64
import shutil
import ssl
import time
import urllib.error
import urllib.request

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from conftest import BrokerProcess, add_users, free_port, unique


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def table_rows(driver, table):
    # Read in one script call: the page replaces its tables every two
    # seconds, so elements found one call earlier may be gone.
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#' + arguments[0] + ' tbody tr')).map(r => Array.from(r.cells).map(c => c.textContent))", table)


def wait_for(driver, condition, what, timeout=30):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: condition(d))
    except Exception as error:
        raise AssertionError("the console did not show %s: %s" % (what, error))


def card(driver, label):
    """The value of the console card labelled `label`, or None."""
    cards = driver.execute_script(
        "return Array.from(document.querySelectorAll('.card')).map(c => [c.children[0].textContent, c.children[1].textContent])")
    return next((value for value, name in cards if name == label), None)


def make_rooms(url, count):
    import asyncio
    from nio import AsyncClient, RegisterResponse, RoomCreateResponse

    async def go():
        client = AsyncClient(url, "@beheerder:gov.test")
        assert isinstance(await client.register("beheerder", "correct horse beheerder"), RegisterResponse)
        for number in range(count):
            room = await client.room_create(name="Kamer %d" % number)
            assert isinstance(room, RoomCreateResponse), room
            await client.room_send(room.room_id, "m.room.message", {"msgtype": "m.text", "body": "hallo %d" % number})
        await client.close()

    asyncio.run(asyncio.wait_for(go(), 60))


def test_the_console_shows_a_new_topic_a_moving_lag_charts_and_events_without_errors(fresh_broker, browser):
    gateway_port = free_port()
    fresh_broker.extra_args = ["--with-gateway", "true", "--gateway-port", str(gateway_port), "--server-name", "gov.test"]
    fresh_broker.start()
    make_rooms("http://127.0.0.1:%d" % gateway_port, 2)
    topic = unique("console")
    group = unique("console-group")
    admin = AdminClient({"bootstrap.servers": fresh_broker.address})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(timeout=30)
    producer = Producer({"bootstrap.servers": fresh_broker.address, "linger.ms": 1})
    for number in range(100):
        producer.produce(topic, key=b"k%d" % number, value=b"v%d" % number, partition=0)
    producer.flush(30)
    consumer = Consumer({"bootstrap.servers": fresh_broker.address, "group.id": group, "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    read = 0
    deadline = time.monotonic() + 30
    while read < 40 and time.monotonic() < deadline:
        message = consumer.poll(1)
        if message is not None and message.error() is None:
            read += 1
    consumer.commit(offsets=[TopicPartition(topic, 0, 40)], asynchronous=False)

    browser.get("http://127.0.0.1:%d/" % fresh_broker.http_port)
    assert browser.title == "Postduif console"
    # The topic just made, with its partitions and records.
    row = wait_for(browser, lambda d: next((r for r in table_rows(d, "topics") if r and r[0] == topic), None), "the new topic")
    assert row[1] == "2" and row[5] == "100", row
    # The group's lag: 60 behind, then 160 after 100 more records, then 0 once it commits them all.
    lag = lambda d: next((r[4] for r in table_rows(d, "groups") if r[:3] == [group, topic, "0"]), None)
    wait_for(browser, lambda d: lag(d) == "60", "a lag of 60")
    for number in range(100):
        producer.produce(topic, value=b"more%d" % number, partition=0)
    producer.flush(30)
    wait_for(browser, lambda d: lag(d) == "160", "the lag growing to 160")
    consumer.commit(offsets=[TopicPartition(topic, 0, 200)], asynchronous=False)
    wait_for(browser, lambda d: lag(d) == "0", "the lag back to 0")
    consumer.close()
    # The throughput chart drew the bytes that came in.
    wait_for(browser, lambda d: len((d.execute_script(
        "const line = document.querySelector('#chart-bytes polyline'); return line ? line.getAttribute('points') : ''") or "").split()) >= 2, "a chart")
    # The chat: the two rooms made above, and the gateway's sessions and deliveries.
    wait_for(browser, lambda d: card(d, "rooms") == "2", "two rooms")
    assert card(browser, "sessions on this gateway") is not None and card(browser, "deliveries per second") is not None
    # The cluster overview and the events of this broker's log.
    assert [r[0] for r in table_rows(browser, "brokers")] == ["1"]
    wait_for(browser, lambda d: "listening for Kafka clients" in d.execute_script("return document.getElementById('events').textContent"),
             "the broker's events")
    # Nothing went wrong in the page, and nothing was loaded from elsewhere.
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
    origin = "http://127.0.0.1:%d/" % fresh_broker.http_port
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(name.startswith(origin) for name in loaded), loaded


def request(url, context, credentials=None):
    headers = {}
    if credentials:
        headers["Authorization"] = "Basic " + base64.b64encode(("%s:%s" % credentials).encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10, context=context) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_with_tls_and_the_authorizer_the_console_wants_a_principal_allowed_describe_on_the_cluster():
    from test_security import Certificates
    certificates = Certificates()
    process = BrokerProcess()
    process.extra_args = ["--sasl", "true", "--authorizer", "true", "--super-users", "User:admin", "--http-tls", "true",
                          "--tls-cert-file", certificates.path("broker.pem"), "--tls-key-file", certificates.path("broker.key")]
    add_users(process.data_dir, (("admin", "admin-secret"), ("alice", "alice-secret")))
    process.start()
    context = ssl.create_default_context(cafile=certificates.path("ca.pem"))
    context.check_hostname = False
    base = "https://127.0.0.1:%d" % process.http_port
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _ = request(base + "/health", context)
                break
            except OSError:
                assert time.monotonic() < deadline, process.read_log()
                time.sleep(0.2)
        assert status == 200
        for path in ("/", "/console/state", "/console/events", "/console.js"):
            assert request(base + path, context)[0] == 401, path
        assert request(base + "/", context, ("admin", "wrong"))[0] == 401
        assert request(base + "/console/state", context, ("alice", "alice-secret"))[0] == 401, "alice may not Describe the cluster"
        status, body = request(base + "/console/state", context, ("admin", "admin-secret"))
        assert status == 200 and '"nodeID"' in body, body
        # Prometheus scrapes /metrics without a login, as before.
        assert request(base + "/metrics", context)[0] == 200
    finally:
        assert process.stop() == 0, process.read_log()
        shutil.rmtree(process.data_dir, ignore_errors=True)
        shutil.rmtree(certificates.dir, ignore_errors=True)
