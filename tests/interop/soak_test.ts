/**
 * Soak: several libnbd clients (python3-libnbd) on a multi-conn export
 * (`denbd serve -e 4`) each do random writes, zeroes, flushes and reads of
 * their own region for a bounded time, checking every read against what
 * they wrote; the server's resident set is sampled once the clients are
 * under way and again at the end, and must not grow beyond
 * {@linkcode MAX_RSS_GROWTH}.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { residentBytes } from "../../scripts/fuzz.ts";
import { needs, python, startDenbd, withTempDir } from "./harness.ts";

const CLIENTS = 4;
const REGION = 8 << 20;
const SOAK_SECONDS = 20;
/**
 * How much the server's resident set may grow between the two samples. V8
 * grows its heap in steps: over 20 s it went from about 67 to 100 MB, and
 * over 60 s it settled near 130 MB.
 */
const MAX_RSS_GROWTH = 96 << 20;

/** One client: argv = URI, region index, region size, seconds, seed. Prints its op count. */
const CLIENT_SCRIPT = `
import nbd, random, sys, time
uri, index, size, seconds, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
rng = random.Random(seed)
h = nbd.NBD()
h.connect_uri(uri)
assert h.can_multi_conn(), "the export must allow multi-conn"
base = index * size
shadow = bytearray(h.pread(size, base))
ops = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    length = rng.choice([512, 4096, 65536, rng.randrange(1, 256 * 1024)])
    offset = rng.randrange(0, size - length + 1)
    roll = rng.random()
    if roll < 0.4:
        data = rng.randbytes(length)
        h.pwrite(data, base + offset, nbd.CMD_FLAG_FUA if rng.random() < 0.2 else 0)
        shadow[offset:offset + length] = data
    elif roll < 0.5:
        h.zero(length, base + offset)
        shadow[offset:offset + length] = bytes(length)
    elif roll < 0.55:
        h.flush()
    else:
        got = h.pread(length, base + offset)
        if got != shadow[offset:offset + length]:
            sys.exit(f"client {index}: mismatch at {base + offset} length {length} after {ops} ops")
    ops += 1
if h.pread(size, base) != shadow:
    sys.exit(f"client {index}: region differs at the end")
h.shutdown()
print(ops)
`;

Deno.test(
  "soak: libnbd clients on a multi-conn export verify their data; memory does not grow",
  needs("nbdsh"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await Deno.writeFile(image, new Uint8Array(0));
      await Deno.truncate(image, CLIENTS * REGION);
      const server = await startDenbd({
        args: ["-t", "-e", String(CLIENTS), "-f", "raw", image],
      });
      try {
        const clients = Array.from(
          { length: CLIENTS },
          (_, index) =>
            python(CLIENT_SCRIPT, [
              server.uri,
              String(index),
              String(REGION),
              String(SOAK_SECONDS),
              String(index + 1),
            ]),
        );
        await new Promise((resolve) => setTimeout(resolve, 3000));
        const start = residentBytes(server.child.pid);
        await new Promise((resolve) => setTimeout(resolve, (SOAK_SECONDS - 4) * 1000));
        const end = residentBytes(server.child.pid);
        const results = await Promise.all(clients);
        for (const [index, result] of results.entries()) {
          assert.equal(result.code, 0, `client ${index}: ${result.stderr}`);
          assert.ok(Number(result.stdout) > 0, `client ${index} did some work`);
        }
        assert.ok(start > 0 && end > 0, "the server's resident set was sampled");
        assert.ok(
          end - start <= MAX_RSS_GROWTH,
          `resident set grew from ${start} to ${end} bytes (bound: ${MAX_RSS_GROWTH})`,
        );
      } finally {
        await server.stop();
      }
    });
  },
);
