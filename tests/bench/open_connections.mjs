// Opens N keep-alive connections to the proxy (one request each, so each is
// a real client connection that the proxy has served), holds them, and
// prints "ready" until stdin closes or it is killed.
import net from 'node:net';

const [host, port, n] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const socks = [];
let done = 0;
for (let i = 0; i < n; i++) {
  const s = net.connect(port, host, () => s.write(`GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n`));
  s.once('data', () => { if (++done === n) console.log('ready'); });
  s.on('error', () => {});
  socks.push(s);
}
setInterval(() => {}, 1000);
