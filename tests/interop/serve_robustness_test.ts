/**
 * Bad input against a running `denbd serve`: malformed or truncated
 * handshakes, lying lengths, garbage requests and clients vanishing
 * mid-request each end one connection (with one log line) while the server
 * keeps serving everyone else and loses nothing.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  check,
  makeSparseImage,
  needs,
  python,
  type ServerProcess,
  startDenbd,
  withServer,
  withTempDir,
} from "./harness.ts";
import {
  decodeChunkHeader,
  decodeErrorChunk,
  decodeGreeting,
  decodeOptionReplyHeader,
  encodeClientFlags,
  encodeInfoRequest,
  encodeOption,
  encodeRequestHeader,
} from "../../src/nbd/wire.ts";
import {
  NBD_CLIENT_FLAG,
  NBD_CMD,
  NBD_ERROR,
  NBD_OPT,
  NBD_REP,
  NBD_REPLY_TYPE,
} from "../../src/nbd/protocol.ts";
import { BufferedReader } from "../../src/io/buffered-reader.ts";
import { writeAll } from "../../src/io/byte-stream.ts";

const MiB = 1024 * 1024;

/** A raw TCP connection to the server under test. */
async function connect(server: ServerProcess) {
  const { hostname, port } = new URL(server.uri);
  const conn = await Deno.connect({ hostname, port: Number(port) });
  return {
    conn,
    reader: new BufferedReader(conn),
    send: (bytes: Uint8Array) => writeAll(conn, bytes),
  };
}

/** Resolves true once the server closed `conn` (bounded wait). */
async function closedByServer(conn: Deno.Conn): Promise<boolean> {
  const buffer = new Uint8Array(64 * 1024);
  const deadline = Date.now() + 5000;
  try {
    while (Date.now() < deadline) {
      if (await conn.read(buffer) === null) return true;
    }
    return false;
  } catch {
    return true;
  } finally {
    conn.close();
  }
}

/** Handshake with fixed newstyle, structured replies and GO on the default export. */
async function negotiatedClient(server: ServerProcess) {
  const client = await connect(server);
  decodeGreeting((await client.reader.readExact(18)).slice());
  await client.send(encodeClientFlags(NBD_CLIENT_FLAG.FIXED_NEWSTYLE | NBD_CLIENT_FLAG.NO_ZEROES));
  await client.send(encodeOption(NBD_OPT.STRUCTURED_REPLY));
  const ack = decodeOptionReplyHeader((await client.reader.readExact(20)).slice());
  assert.equal(ack.type, NBD_REP.ACK);
  await client.send(encodeOption(NBD_OPT.GO, encodeInfoRequest({ name: "", infos: [] })));
  while (true) {
    const reply = decodeOptionReplyHeader((await client.reader.readExact(20)).slice());
    await client.reader.skip(reply.length);
    if (reply.type === NBD_REP.ACK) return client;
    assert.equal(reply.type, NBD_REP.INFO);
  }
}

/** A libnbd client that stays connected through `during`, then must still read correctly. */
async function bystanderSurvives(
  server: ServerProcess,
  during: () => Promise<void>,
): Promise<void> {
  const script = `
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
print("connected", flush=True)
sys.stdin.readline()
assert h.pread(4096, 0) == bytes([1]) * 4096
print("ok")
`;
  const child = new Deno.Command("/usr/bin/python3", {
    args: ["-c", script, server.uri],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
    signal: AbortSignal.timeout(30_000),
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  assert.match((await lines.read()).value ?? "", /connected/);
  await during();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode("go\n"));
  await writer.close();
  let rest = "";
  for (let chunk = await lines.read(); !chunk.done; chunk = await lines.read()) rest += chunk.value;
  assert.equal((await child.status).code, 0);
  assert.match(rest, /ok/);
}

async function withImage(body: (server: ServerProcess, image: string) => Promise<void>) {
  await withTempDir(async (dir) => {
    const image = join(dir, "disk.img");
    await makeSparseImage(image, 4 * MiB);
    const bytes = new Uint8Array(64 * 1024).fill(1);
    const file = await Deno.open(image, { write: true });
    await writeAll(file, bytes);
    file.close();
    await withServer(
      startDenbd,
      { args: ["-f", "raw", "-t", "-e", "0", image] },
      (server) => body(server, image),
    );
  });
}

Deno.test(
  "garbage on the port closes that connection; a good client is served next",
  needs("nbdinfo", "nbdsh"),
  async () => {
    await withImage(async (server) => {
      await bystanderSurvives(server, async () => {
        const client = await connect(server);
        await client.reader.readExact(18);
        await client.send(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(10)));
        assert.ok(await closedByServer(client.conn));
      });
      await check("nbdinfo", ["--size", server.uri]);
      assert.match(server.stderr(), /closing connection: client sent unknown flags/);
    });
  },
);

Deno.test(
  "truncated handshakes and vanishing clients leave the server running",
  needs("nbdinfo"),
  async () => {
    await withImage(async (server) => {
      for (const bytes of [new Uint8Array(0), new Uint8Array(2), encodeClientFlags(1)]) {
        const client = await connect(server);
        await client.send(bytes);
        client.conn.close();
      }
      const partial = await connect(server);
      await partial.reader.readExact(18);
      await partial.send(encodeClientFlags(NBD_CLIENT_FLAG.FIXED_NEWSTYLE));
      await partial.send(encodeOption(NBD_OPT.GO, new Uint8Array(200)).subarray(0, 40));
      partial.conn.close();
      await check("nbdinfo", ["--size", server.uri]);
    });
  },
);

Deno.test(
  "an option claiming 4 GiB of data is refused without reading it",
  needs("nbdinfo"),
  async () => {
    await withImage(async (server) => {
      const client = await connect(server);
      await client.reader.readExact(18);
      await client.send(encodeClientFlags(NBD_CLIENT_FLAG.FIXED_NEWSTYLE));
      const header = encodeOption(NBD_OPT.LIST);
      new DataView(header.buffer).setUint32(12, 0xffff_ffff);
      await client.send(header);
      assert.ok(await closedByServer(client.conn));
      assert.match(server.stderr(), /claims 4294967295 bytes of data, over the limit/);
      await check("nbdinfo", ["--size", server.uri]);
    });
  },
);

Deno.test("unknown options are refused and negotiation continues", needs("nbdinfo"), async () => {
  await withImage(async (server) => {
    const client = await connect(server);
    await client.reader.readExact(18);
    await client.send(encodeClientFlags(NBD_CLIENT_FLAG.FIXED_NEWSTYLE));
    await client.send(encodeOption(4242, new Uint8Array(1000)));
    const reply = decodeOptionReplyHeader((await client.reader.readExact(20)).slice());
    assert.deepEqual([reply.option, reply.type], [4242, NBD_REP.ERR_UNSUP]);
    await client.reader.skip(reply.length);
    await client.send(encodeOption(NBD_OPT.ABORT));
    assert.equal(
      decodeOptionReplyHeader((await client.reader.readExact(20)).slice()).type,
      NBD_REP.ACK,
    );
    assert.ok(await closedByServer(client.conn));
  });
});

Deno.test(
  "a bad request magic closes only that connection",
  needs("nbdsh"),
  async () => {
    await withImage(async (server) => {
      await bystanderSurvives(server, async () => {
        const client = await negotiatedClient(server);
        const request = encodeRequestHeader({
          flags: 0,
          type: NBD_CMD.READ,
          cookie: 1n,
          offset: 0,
          length: 512,
        });
        request[0] = 0x12;
        await client.send(request);
        assert.ok(await closedByServer(client.conn));
      });
      assert.match(server.stderr(), /closing connection: request has bad magic 0x12609513/);
    });
  },
);

Deno.test("an unknown command is EINVAL and the connection goes on", needs("nbdinfo"), async () => {
  await withImage(async (server) => {
    const client = await negotiatedClient(server);
    await client.send(
      encodeRequestHeader({ flags: 0, type: 77, cookie: 5n, offset: 0, length: 0 }),
    );
    const chunk = decodeChunkHeader((await client.reader.readExact(20)).slice());
    assert.deepEqual([chunk.type, chunk.cookie], [NBD_REPLY_TYPE.ERROR, 5n]);
    const error = decodeErrorChunk((await client.reader.readExact(chunk.length)).slice(), false);
    assert.equal(error.error, NBD_ERROR.EINVAL);
    assert.match(error.message, /unknown command/);
    await client.send(
      encodeRequestHeader({ flags: 0, type: NBD_CMD.FLUSH, cookie: 6n, offset: 0, length: 0 }),
    );
    const flushed = await client.reader.readExact(16);
    assert.equal(new DataView(flushed.buffer, flushed.byteOffset).getUint32(4), 0);
    await client.send(
      encodeRequestHeader({ flags: 0, type: NBD_CMD.DISC, cookie: 7n, offset: 0, length: 0 }),
    );
    assert.ok(await closedByServer(client.conn));
  });
});

Deno.test(
  "a client vanishing mid-write changes nothing on disk",
  needs("nbdinfo"),
  async () => {
    await withImage(async (server, image) => {
      const before = await Deno.readFile(image);
      const client = await negotiatedClient(server);
      await client.send(
        encodeRequestHeader({
          flags: 0,
          type: NBD_CMD.WRITE,
          cookie: 1n,
          offset: 0,
          length: 65536,
        }),
      );
      await client.send(new Uint8Array(30_000).fill(0xee));
      client.conn.close();
      await check("nbdinfo", ["--size", server.uri]);
      assert.deepEqual(await Deno.readFile(image), before);
      assert.match(server.stderr(), /client disconnected mid-message/);
    });
  },
);

Deno.test("many clients at once are all served", needs("nbdsh"), async () => {
  await withImage(async (server) => {
    const script = `
import nbd, sys
handles = []
for _ in range(32):
    h = nbd.NBD()
    h.connect_uri(sys.argv[1])
    handles.append(h)
assert all(h.pread(4096, 0) == bytes([1]) * 4096 for h in handles)
print(len(handles))
`;
    const result = await python(script, [server.uri]);
    assert.equal(result.stdout.trim(), "32", result.stderr);
  });
});
