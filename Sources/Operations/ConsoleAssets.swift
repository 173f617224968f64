/// The operator console's page, style and script, served from the
/// operations port itself: no script, font or image from anywhere else
/// (the Content-Security-Policy the server sends forbids it). The script
/// polls `/console/state`, `/console/events` and `/metrics` every two
/// seconds and draws the tables and the charts.
enum ConsoleAssets {
    static let contentSecurityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

    static let page = """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Postduif console</title>
        <link rel="icon" href="data:,">
        <link rel="stylesheet" href="/console.css">
        <script src="/console.js" defer></script>
        </head>
        <body>
        <header><h1>Postduif</h1><span id="mode"></span><span id="updated"></span></header>
        <main>
        <section id="cluster-section"><h2>Cluster</h2>
          <div id="cluster-summary" class="cards"></div>
          <table id="brokers"><thead><tr><th>Broker</th><th>Address</th><th>Rack</th><th>Role</th></tr></thead><tbody></tbody></table>
        </section>
        <section id="charts-section"><h2>Throughput and latency</h2>
          <div class="charts">
            <figure><figcaption>Bytes per second in / out</figcaption><svg id="chart-bytes" viewBox="0 0 300 100" preserveAspectRatio="none"></svg><div class="legend" id="legend-bytes"></div></figure>
            <figure><figcaption>Produce requests per second</figcaption><svg id="chart-requests" viewBox="0 0 300 100" preserveAspectRatio="none"></svg><div class="legend" id="legend-requests"></div></figure>
            <figure><figcaption>Produce latency p99 (ms)</figcaption><svg id="chart-latency" viewBox="0 0 300 100" preserveAspectRatio="none"></svg><div class="legend" id="legend-latency"></div></figure>
          </div>
        </section>
        <section id="topics-section"><h2>Topics</h2>
          <table id="topics"><thead><tr><th>Topic</th><th>Partitions</th><th>Replicas</th><th>Under-replicated</th><th>Offline</th><th>Records</th><th>Size</th><th>Retention</th><th>Cleanup</th></tr></thead><tbody></tbody></table>
          <table id="partitions"><thead><tr><th>Topic</th><th>Partition</th><th>Leader</th><th>Replicas</th><th>ISR</th><th>Start</th><th>End</th><th>High watermark</th><th>Size</th></tr></thead><tbody></tbody></table>
        </section>
        <section id="groups-section"><h2>Consumer groups</h2>
          <table id="groups"><thead><tr><th>Group</th><th>Topic</th><th>Partition</th><th>Committed</th><th>Lag</th></tr></thead><tbody></tbody></table>
        </section>
        <section id="chat-section"><h2>Chat</h2><div id="chat" class="cards"></div></section>
        <section id="events-section"><h2>Recent events</h2><ol id="events"></ol></section>
        </main>
        </body>
        </html>
        """

    static let style = """
        body { font-family: system-ui, sans-serif; margin: 0; color: #1b1f23; background: #f6f8fa; }
        header { display: flex; gap: 1.5em; align-items: baseline; padding: 0.6em 1.2em; background: #154273; color: #fff; }
        header h1 { margin: 0; font-size: 1.4em; }
        main { padding: 0 1.2em 2em; }
        section { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; margin: 1em 0; padding: 0.4em 1em 1em; }
        h2 { font-size: 1.1em; }
        table { border-collapse: collapse; width: 100%; margin: 0.5em 0; font-size: 0.9em; }
        th, td { text-align: left; padding: 0.25em 0.6em; border-bottom: 1px solid #eaeef2; }
        td.number, th.number { text-align: right; font-variant-numeric: tabular-nums; }
        .cards { display: flex; flex-wrap: wrap; gap: 0.8em; }
        .card { border: 1px solid #d0d7de; border-radius: 6px; padding: 0.4em 0.8em; min-width: 9em; }
        .card .value { font-size: 1.5em; font-variant-numeric: tabular-nums; }
        .card.bad .value { color: #b00020; }
        .charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); gap: 1em; }
        figure { margin: 0; }
        svg { width: 100%; height: 120px; background: #fbfcfd; border: 1px solid #eaeef2; }
        polyline { fill: none; stroke-width: 1.5; vector-effect: non-scaling-stroke; }
        .series-0 { stroke: #154273; } .series-1 { stroke: #e17000; }
        .legend { font-size: 0.85em; }
        #events { font-family: ui-monospace, monospace; font-size: 0.8em; max-height: 22em; overflow-y: auto; padding-left: 2.5em; }
        #events .warning { color: #8a5300; } #events .error, #events .critical { color: #b00020; }
        """

    static let script = #"""
        "use strict";
        const history = { bytesIn: [], bytesOut: [], produce: [], latency: [] };
        const points = 60;
        let previous = null;
        let latestRooms = null;

        function text(value) { return value === null || value === undefined ? "–" : String(value); }
        function bytes(value) {
          if (value === null || value === undefined) return "–";
          const units = ["B", "KiB", "MiB", "GiB", "TiB"];
          let unit = 0;
          while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
          return value.toFixed(unit === 0 ? 0 : 1) + " " + units[unit];
        }
        function duration(ms) {
          if (ms === null || ms === undefined) return "forever";
          const hours = ms / 3600000;
          return hours >= 48 ? (hours / 24).toFixed(0) + " d" : hours.toFixed(1) + " h";
        }
        function cell(row, value, number) {
          const td = document.createElement("td");
          td.textContent = text(value);
          if (number) td.className = "number";
          row.appendChild(td);
        }
        function fill(id, rows) {
          const body = document.querySelector("#" + id + " tbody");
          const fresh = document.createElement("tbody");
          for (const values of rows) {
            const row = document.createElement("tr");
            values.forEach((value) => cell(row, value, typeof value === "number"));
            fresh.appendChild(row);
          }
          body.replaceWith(fresh);
        }
        function card(container, label, value, bad) {
          const div = document.createElement("div");
          div.className = "card" + (bad ? " bad" : "");
          const v = document.createElement("div");
          v.className = "value";
          v.textContent = text(value);
          const l = document.createElement("div");
          l.textContent = label;
          div.appendChild(v);
          div.appendChild(l);
          container.appendChild(div);
        }

        function renderState(state) {
          latestRooms = state.rooms === undefined ? null : state.rooms;
          document.getElementById("mode").textContent = state.mode + ", broker " + state.nodeID + ", cluster " + state.clusterID;
          const summary = document.getElementById("cluster-summary");
          summary.replaceChildren();
          const under = state.topics.reduce((sum, topic) => sum + topic.underReplicated, 0);
          const offline = state.topics.reduce((sum, topic) => sum + topic.offline, 0);
          card(summary, "brokers", state.brokers.length, false);
          card(summary, "controller", state.controller === null ? "none" : state.controller, state.controller === null);
          card(summary, "topics", state.topics.length, false);
          card(summary, "under-replicated", under, under > 0);
          card(summary, "offline", offline, offline > 0);
          fill("brokers", state.brokers.map((broker) => [broker.id, broker.address, broker.rack || "–",
            [broker.isController ? "controller" : "", broker.isThisBroker ? "this broker" : "", broker.isStopping ? "stopping" : ""].filter(Boolean).join(", ") || "broker"]));
          fill("topics", state.topics.map((topic) => {
            const records = topic.partitions.reduce((sum, p) => sum + (p.logEndOffset === null || p.logEndOffset === undefined ? 0 : p.logEndOffset - p.logStartOffset), 0);
            const size = topic.partitions.reduce((sum, p) => sum + (p.sizeBytes || 0), 0);
            const factor = topic.partitions.length ? topic.partitions[0].replicas.length : 0;
            return [topic.name, topic.partitions.length, factor, topic.underReplicated, topic.offline, records, bytes(size),
              topic.retentionBytes ? duration(topic.retentionMs) + " / " + bytes(topic.retentionBytes) : duration(topic.retentionMs), topic.cleanupPolicy];
          }));
          const partitions = [];
          for (const topic of state.topics) {
            for (const p of topic.partitions) {
              partitions.push([topic.name, p.index, p.leader, p.replicas.join(","), p.isr.join(","), p.logStartOffset, p.logEndOffset, p.highWatermark, bytes(p.sizeBytes)]);
            }
          }
          fill("partitions", partitions);
          fill("groups", state.groups.map((group) => [group.group, group.topic, group.partition, group.committedOffset, group.lag]));
        }

        function renderEvents(body) {
          const list = document.getElementById("events");
          const fresh = document.createElement("ol");
          fresh.id = "events";
          for (const event of body.events.slice().reverse()) {
            const item = document.createElement("li");
            item.className = event.level;
            const details = Object.entries(event.details).map(([key, value]) => key + "=" + value).join(" ");
            item.textContent = event.time + " " + event.level + " " + event.message + (details ? " " + details : "");
            fresh.appendChild(item);
          }
          list.replaceWith(fresh);
        }

        // Prometheus text: {name: [{labels, value}]}.
        function parseMetrics(textBody) {
          const families = {};
          for (const line of textBody.split("\n")) {
            if (!line || line.startsWith("#")) continue;
            const match = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? ([^ ]+)/);
            if (!match) continue;
            const labels = {};
            if (match[3]) {
              for (const pair of match[3].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
            }
            (families[match[1]] = families[match[1]] || []).push({ labels: labels, value: parseFloat(match[4]) });
          }
          return families;
        }
        function sum(families, name, filter) {
          return (families[name] || []).filter((sample) => !filter || filter(sample.labels)).reduce((total, sample) => total + sample.value, 0);
        }
        function produceBuckets(families) {
          const buckets = {};
          for (const sample of families["postduif_request_duration_seconds_bucket"] || []) {
            if (sample.labels.api !== "Produce") continue;
            buckets[sample.labels.le] = (buckets[sample.labels.le] || 0) + sample.value;
          }
          return buckets;
        }
        function quantile(now, before, q) {
          const bounds = Object.keys(now).filter((le) => le !== "+Inf").map(parseFloat).sort((a, b) => a - b);
          const count = (now["+Inf"] || 0) - ((before && before["+Inf"]) || 0);
          if (count <= 0) return null;
          for (const bound of bounds) {
            const key = Object.keys(now).find((le) => parseFloat(le) === bound);
            const within = now[key] - ((before && before[key]) || 0);
            if (within >= q * count) return bound * 1000;
          }
          return bounds.length ? bounds[bounds.length - 1] * 1000 : null;
        }
        function push(series, value) {
          series.push(value);
          if (series.length > points) series.shift();
        }
        function draw(id, seriesList, legendID, format) {
          const svg = document.getElementById(id);
          const top = Math.max(1, ...seriesList.flat().filter((v) => v !== null));
          svg.replaceChildren();
          seriesList.forEach((series, index) => {
            const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
            line.setAttribute("class", "series-" + index);
            const coordinates = [];
            series.forEach((value, position) => {
              if (value === null) return;
              coordinates.push((position * 300 / (points - 1)).toFixed(1) + "," + (100 - value * 95 / top).toFixed(1));
            });
            line.setAttribute("points", coordinates.join(" "));
            svg.appendChild(line);
          });
          document.getElementById(legendID).textContent = format(seriesList.map((series) => series.length ? series[series.length - 1] : null));
        }

        function renderMetrics(families) {
          const now = { time: performance.now(), bytesIn: sum(families, "postduif_bytes_in_total"), bytesOut: sum(families, "postduif_bytes_out_total"),
            produce: sum(families, "postduif_requests_total", (labels) => labels.api === "Produce"), buckets: produceBuckets(families) };
          if (previous) {
            const seconds = Math.max(0.001, (now.time - previous.time) / 1000);
            push(history.bytesIn, (now.bytesIn - previous.bytesIn) / seconds);
            push(history.bytesOut, (now.bytesOut - previous.bytesOut) / seconds);
            push(history.produce, (now.produce - previous.produce) / seconds);
            push(history.latency, quantile(now.buckets, previous.buckets, 0.99));
            draw("chart-bytes", [history.bytesIn, history.bytesOut], "legend-bytes", (last) => "in " + bytes(last[0]) + "/s, out " + bytes(last[1]) + "/s");
            draw("chart-requests", [history.produce], "legend-requests", (last) => text(last[0] === null ? null : last[0].toFixed(1)) + " per second");
            draw("chart-latency", [history.latency], "legend-latency", (last) => last[0] === null ? "no produce requests" : "≤ " + last[0].toFixed(1) + " ms");
          }
          const deliveries = sum(families, "postduif_gateway_deliveries_total");
          const perSecond = previous && previous.deliveries !== undefined ? (deliveries - previous.deliveries) / Math.max(0.001, (now.time - previous.time) / 1000) : null;
          now.deliveries = deliveries;
          const chat = document.getElementById("chat");
          chat.replaceChildren();
          card(chat, "rooms", latestRooms, false);
          card(chat, "sessions on this gateway", sum(families, "postduif_gateway_local_users"), false);
          card(chat, "syncs waiting", sum(families, "postduif_gateway_long_polls"), false);
          card(chat, "deliveries per second", perSecond === null ? null : perSecond.toFixed(1), false);
          card(chat, "messages delivered", deliveries, false);
          card(chat, "deliveries dropped", sum(families, "postduif_fanout_dropped_deliveries_total"), sum(families, "postduif_fanout_dropped_deliveries_total") > 0);
          card(chat, "connections", sum(families, "postduif_connections"), false);
          previous = now;
        }

        async function refresh() {
          try {
            const [state, events, metrics] = await Promise.all([
              fetch("/console/state", { cache: "no-store" }).then((r) => r.json()),
              fetch("/console/events", { cache: "no-store" }).then((r) => r.json()),
              fetch("/metrics", { cache: "no-store" }).then((r) => r.text())]);
            renderState(state);
            renderEvents(events);
            renderMetrics(parseMetrics(metrics));
            document.getElementById("updated").textContent = "updated " + new Date(Date.now()).toLocaleTimeString();
          } catch (error) {
            document.getElementById("updated").textContent = "not reachable: " + error.message;
          }
        }
        refresh();
        setInterval(refresh, 2000);
        """#
}
