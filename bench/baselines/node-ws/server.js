// Baseline for `scripts/bench fanout`: the fan-out server a Node.js developer writes with `ws`.
// The same synthetic load as `gateway synth` (N symbols, M updates/s in total, generated every
// millisecond, each update stamped with its publish time in `rx`, ns since the epoch); clients
// send {"op":"subscribe","symbols":[...]}; each update of a symbol is sent to each subscriber as
// its own message with a per-connection `seq`.
// Usage: node server.js PORT SYMBOLS RATE
'use strict';
const { WebSocketServer } = require('ws');
const [port, symbols, rate] = process.argv.slice(2).map(Number);

function name(i) {
  let s = '';
  for (let k = 0; k < 4; k++) { s = String.fromCharCode(65 + (i % 26)) + s; i = Math.floor(i / 26); }
  return s;
}
const names = Array.from({ length: symbols }, (_, i) => name(i));
const index = new Map(names.map((n, i) => [n, i]));
const subscribers = Array.from({ length: symbols }, () => new Set());
const bid = Array.from({ length: symbols }, (_, i) => 1000000 + (i * 7919) % 4000000);
const px = (v) => `${Math.floor(v / 10000)}.${String(v % 10000).padStart(4, '0')}`;
const nowNs = () => Math.round((performance.timeOrigin + performance.now()) * 1e6);

const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });
wss.on('connection', (ws, req) => {
  req.socket.setNoDelay(true);
  ws.seq = 0;
  ws.subs = [];
  ws.on('message', (data) => {
    let v;
    try { v = JSON.parse(data); } catch { return; }
    for (const s of v.symbols || []) {
      const i = index.get(s);
      if (i !== undefined) { subscribers[i].add(ws); ws.subs.push(i); }
    }
    ws.send(JSON.stringify({ type: 'subscribed', seq: ++ws.seq }));
  });
  ws.on('close', () => { for (const i of ws.subs) subscribers[i].delete(ws); });
});

const start = performance.now();
let sent = 0;
setInterval(() => {
  const due = Math.floor((performance.now() - start) * rate / 1000);
  while (sent < due) {
    sent++;
    const i = Math.floor(Math.random() * symbols);
    bid[i] = Math.random() < 0.5 ? bid[i] + 100 : Math.max(100, bid[i] - 100);
    const q = `{"s":"${names[i]}","bid":"${px(bid[i])}","bid_sz":${100 * (1 + Math.floor(Math.random() * 20))},"ask":"${px(bid[i] + 200)}","rx":${nowNs()}}`;
    for (const ws of subscribers[i]) {
      if (ws.readyState === 1) ws.send(`{"type":"update","seq":${++ws.seq},"quotes":[${q}]}`);
    }
  }
}, 1);
