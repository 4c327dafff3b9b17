// Mainstream reference for the performance report: a Node `ws@8` echo server, the same job as
// `omnigate-loadtest echo-server`. Usage: node echo.js 127.0.0.1:PORT (exits 0 on SIGTERM).
'use strict';
const { WebSocketServer } = require('ws');

const [host, port] = process.argv[2].split(':');
const wss = new WebSocketServer({ host, port: Number(port), perMessageDeflate: false });
wss.on('connection', (ws, req) => {
  req.socket.setNoDelay(true);
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
process.on('SIGTERM', () => wss.close(() => process.exit(0)) || setTimeout(() => process.exit(0), 1000));
