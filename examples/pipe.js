'use strict';
// Pipe: a child sends messages to its parent and gets a reply.
const { Process, Pipe } = require('multiproc');

async function main() {
  const [parentEnd, childEnd] = Pipe();
  const p = new Process({
    target: async (conn) => {
      conn.send({ hello: 'from the child', pid: process.pid });
      const reply = await conn.recv();
      conn.send(`child got: ${reply}`);
      conn.close();
    },
    args: [childEnd],
  });
  p.start();
  childEnd.close();
  console.log(await parentEnd.recv());
  parentEnd.send('hi back');
  console.log(await parentEnd.recv());
  await p.join();
  parentEnd.close();
  if (p.exitCode !== 0) throw new Error(`child exited with ${p.exitCode}`);
}

main().catch((e) => { console.error(e); process.exit(1); });
