// Sends requests at a fixed rate over keep-alive connections for a while and
// prints {"sent","ok","errors","rate"}: the load under which the proxy's own
// overhead histogram is read (wrk cannot hold a fixed rate).
import http from 'node:http';

const [url, rate, seconds, key] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4]), process.argv[5]];
const body = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello there' }] });
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const u = new URL(url);
let sent = 0, ok = 0, errors = 0;
const started = Date.now();
const total = rate * seconds;
await new Promise((resolve) => {
  const tick = setInterval(() => {
    const due = Math.min(total, Math.floor(((Date.now() - started) / 1000) * rate));
    while (sent < due) {
      sent++;
      const req = http.request({ host: u.hostname, port: u.port, path: u.pathname, method: 'POST', agent,
        headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, 'content-length': Buffer.byteLength(body) } }, (res) => {
        res.resume();
        res.on('end', () => { if (res.statusCode === 200) ok++; else errors++; if (ok + errors === total) resolve(); });
      });
      req.on('error', () => { errors++; if (ok + errors === total) resolve(); });
      req.end(body);
    }
    if (sent >= total) clearInterval(tick);
  }, 2);
});
agent.destroy();
console.log(JSON.stringify({ sent, ok, errors, rate: (ok + errors) / ((Date.now() - started) / 1000) }));
