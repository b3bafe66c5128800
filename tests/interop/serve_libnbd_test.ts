/**
 * `denbd serve` used by libnbd's tools (nbdinfo, nbdcopy) and its Python
 * bindings (what nbdsh runs), compared with qemu-nbd where both answer.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  check,
  makeSparseImage,
  needs,
  python,
  run,
  type ServerProcess,
  sha256File,
  startDenbd,
  startQemuNbd,
  withServer,
  withTempDir,
} from "./harness.ts";

const MiB = 1024 * 1024;
const REGIONS = [[0, 65536], [3 * MiB, 8192], [7 * MiB, 512 * 1024]] as const;

/** nbdinfo --json with the fields that name the server's address removed. */
async function nbdinfoJson(server: ServerProcess, ...flags: string[]): Promise<unknown> {
  const info = JSON.parse(await check("nbdinfo", ["--json", ...flags, server.uri]));
  for (const entry of info.exports) delete entry.uri;
  return info;
}

Deno.test(
  "nbdinfo --json matches qemu-nbd's for the same flags (read-only, shared, names)",
  needs("nbdinfo", "qemu-nbd"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, 8 * MiB, REGIONS);
      const variants = [
        [],
        ["-r"],
        ["-e", "2"],
        ["-r", "-e", "0", "-x", "named", "-D", "a described export"],
      ];
      for (const flags of variants) {
        const exportName = flags.includes("-x") ? "named" : "";
        const start = { args: ["-f", "raw", "-t", ...flags, image], exportName };
        const describe = (server: ServerProcess) => nbdinfoJson(server);
        const ours = await withServer(startDenbd, start, describe);
        const reference = await withServer(startQemuNbd, start, describe);
        assert.deepEqual(ours, reference, `flags ${flags.join(" ")}`);
      }
    });
  },
);

Deno.test("nbdinfo --list, --map and --can", needs("nbdinfo", "qemu-nbd"), async () => {
  await withTempDir(async (dir) => {
    const image = join(dir, "disk.img");
    await makeSparseImage(image, 8 * MiB, REGIONS);
    const start = {
      args: ["-f", "raw", "-t", "-x", "disk", "-D", "the disk", image],
      exportName: "disk",
    };
    const inspect = (server: ServerProcess) =>
      Promise.all([
        nbdinfoJson(server, "--list"),
        check("nbdinfo", ["--map", server.uri]),
        check("nbdinfo", ["--map", "--totals", server.uri]),
      ]);
    const [list, map, totals] = await withServer(startDenbd, start, async (server) => {
      const can = (what: string) => run("nbdinfo", ["--can", what, server.uri]);
      assert.equal((await can("write")).code, 0);
      assert.equal((await can("trim")).code, 0);
      assert.equal((await can("multi-conn")).code, 2, "-e 1 (default) means no multi-conn");
      return inspect(server);
    });
    assert.equal(
      (list as { exports: { description: string }[] }).exports[0].description,
      "the disk",
    );
    assert.equal(
      map,
      [
        "         0       65536    0  data",
        "     65536     3080192    3  hole,zero",
        "   3145728        8192    0  data",
        "   3153920     4186112    3  hole,zero",
        "   7340032      524288    0  data",
        "   7864320      524288    3  hole,zero",
        "",
      ].join("\n"),
    );
    const reference = await withServer(startQemuNbd, start, inspect);
    assert.deepEqual([list, map, totals], reference);
  });
});

Deno.test(
  "nbdcopy both ways keeps the bytes (checksums) and the holes",
  needs("nbdcopy"),
  async () => {
    await withTempDir(async (dir) => {
      const source = join(dir, "source.img");
      const exported = join(dir, "exported.img");
      const back = join(dir, "back.img");
      await makeSparseImage(source, 16 * MiB, REGIONS);
      await makeSparseImage(exported, 16 * MiB);
      await withServer(
        startDenbd,
        { args: ["-f", "raw", "-t", "-e", "0", exported] },
        async (server) => {
          await check("nbdcopy", ["--connections=4", "--requests=16", source, server.uri]);
          await check("nbdcopy", ["--connections=4", server.uri, back]);
        },
      );
      const expected = await sha256File(source);
      assert.equal(await sha256File(exported), expected);
      assert.equal(await sha256File(back), expected);
      const allocated = (await Deno.stat(back)).blocks! * 512;
      assert.ok(allocated < 2 * MiB, `copy should stay sparse, ${allocated} bytes allocated`);
    });
  },
);

/** A libnbd script printing one line per probe: name, then "ok" or the errno. */
const ERROR_PROBE = `
import nbd, sys
h = nbd.NBD()
h.set_strict_mode(0)
if sys.argv[2] == "simple":
    h.set_request_structured_replies(False)
h.connect_uri(sys.argv[1])
size = h.get_size()
M = 1024 * 1024
probes = {
    "write": lambda: h.pwrite(b"x" * 512, 0),
    "write-fua": lambda: h.pwrite(b"x" * 512, 0, nbd.CMD_FLAG_FUA),
    "trim": lambda: h.trim(512, 0),
    "zero": lambda: h.zero(512, 0),
    "zero-fast": lambda: h.zero(65536, 0, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE),
    "read-beyond": lambda: h.pread(512, size),
    "read-crossing": lambda: h.pread(1024, size - 512),
    "write-beyond": lambda: h.pwrite(b"x" * 512, size),
    "zero-beyond": lambda: h.zero(512, size),
    "trim-beyond": lambda: h.trim(512, size),
    "cache-beyond": lambda: h.cache(512, size),
    "read-bad-flag": lambda: h.pread(512, 0, nbd.CMD_FLAG_NO_HOLE),
    "write-bad-flag": lambda: h.pwrite(b"x" * 512, 0, nbd.CMD_FLAG_REQ_ONE),
    "read-df-too-large": lambda: h.pread(32 * M + 512, 0, nbd.CMD_FLAG_DF),
    "read-too-large": lambda: h.pread(32 * M + 512, 0),
    "write-too-large": lambda: h.pwrite(b"x" * (32 * M + 512), 0),
    "block-status-empty": lambda: h.block_status(0, 0, lambda *a: 0),
    "read-zero-length": lambda: h.pread(0, 0),
    "flush": lambda: h.flush(),
    "cache": lambda: h.cache(4096, 0),
    "read-after-errors": lambda: h.pread(4096, 0),
}
for name, probe in probes.items():
    try:
        probe()
        print(name, "ok")
    except nbd.Error as e:
        print(name, e.errnum)
`;

async function probeErrors(uri: string, replies: "structured" | "simple") {
  const result = await python(ERROR_PROBE, [uri, replies]);
  assert.equal(result.code, 0, result.stderr);
  return Object.fromEntries(result.stdout.trim().split("\n").map((line) => line.split(" ")));
}

const EPERM = "1", EIO = "5", EINVAL = "22", ENOSPC = "28", EOVERFLOW = "75", ENOTSUP = "95";

Deno.test("error codes on a read-only export follow the NBD spec", needs("nbdsh"), async () => {
  await withTempDir(async (dir) => {
    const image = join(dir, "disk.img");
    await makeSparseImage(image, 64 * MiB, REGIONS);
    await withServer(startDenbd, { args: ["-f", "raw", "-t", "-r", image] }, async (server) => {
      const errors = await probeErrors(server.uri, "structured");
      assert.equal(errors.write, EPERM);
      assert.equal(errors["write-fua"], EPERM);
      assert.equal(errors.trim, EPERM);
      assert.equal(errors.zero, EPERM);
      assert.equal(errors["read-beyond"], EINVAL);
      assert.equal(errors["read-crossing"], EINVAL);
      assert.equal(errors["read-bad-flag"], EINVAL);
      assert.equal(errors.flush, "ok");
      assert.equal(errors["read-after-errors"], "ok", "an error leaves the connection usable");
    });
  });
});

Deno.test("error codes on a writable export follow the NBD spec", needs("nbdsh"), async () => {
  await withTempDir(async (dir) => {
    const image = join(dir, "disk.img");
    await makeSparseImage(image, 64 * MiB, REGIONS);
    await withServer(startDenbd, { args: ["-f", "raw", "-t", image] }, async (server) => {
      const errors = await probeErrors(server.uri, "structured");
      assert.deepEqual(errors, {
        "write": "ok",
        "write-fua": "ok",
        "trim": "ok",
        "zero": "ok",
        "zero-fast": "ok",
        "read-beyond": EINVAL,
        "read-crossing": EINVAL,
        "write-beyond": ENOSPC,
        "zero-beyond": ENOSPC,
        "trim-beyond": EINVAL,
        "cache-beyond": EINVAL,
        "read-bad-flag": EINVAL,
        "write-bad-flag": EINVAL,
        "read-df-too-large": EOVERFLOW,
        "read-too-large": "ok",
        "write-too-large": EINVAL,
        "block-status-empty": EINVAL,
        "read-zero-length": "ok",
        "flush": "ok",
        "cache": "ok",
        "read-after-errors": "ok",
      });
      const simple = await probeErrors(server.uri, "simple");
      assert.equal(simple["read-too-large"], EINVAL, "simple replies cannot fragment");
      assert.equal(simple["read-beyond"], EINVAL);
      assert.equal(simple["read-after-errors"], "ok");
    });
  });
});

Deno.test(
  "a fast zero that cannot be fast is ENOTSUP and changes nothing",
  needs("nbdsh"),
  async () => {
    // tmpfs can punch holes but has no FALLOC_FL_ZERO_RANGE: zeroing without
    // a hole cannot be fast there.
    const dir = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "denbd-test-" });
    try {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, 4 * MiB, [[0, 65536]]);
      await withServer(startDenbd, { args: ["-f", "raw", "-t", image] }, async (server) => {
        const errors = await probeErrors(server.uri, "structured");
        assert.equal(errors["zero-fast"], ENOTSUP);
        assert.equal(errors.zero, "ok", "slow zeroing still works without the flag");
      });
      const bytes = await Deno.readFile(image);
      assert.notEqual(bytes[1024], 0, "the refused fast zero did not touch the data");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("storage failures are EIO and do not end the connection", needs("nbdsh"), async () => {
  await withTempDir(async (dir) => {
    const image = join(dir, "disk.img");
    await makeSparseImage(image, 4 * MiB, [[0, 4 * MiB]]);
    await withServer(startDenbd, { args: ["-f", "raw", "-t", "-r", image] }, async (server) => {
      const script = `
import nbd, os, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
os.truncate(sys.argv[2], 1024 * 1024)
for offset in (3 * 1024 * 1024, 0):
    try:
        h.pread(4096, offset)
        print("ok")
    except nbd.Error as e:
        print(e.errnum)
`;
      const result = await python(script, [server.uri, image]);
      assert.equal(result.stdout, `${EIO}\nok\n`, result.stderr);
    });
  });
});

Deno.test("structured reads send holes as OFFSET_HOLE chunks", needs("nbdsh"), async () => {
  await withTempDir(async (dir) => {
    const image = join(dir, "disk.img");
    await makeSparseImage(image, 4 * MiB, [[MiB, 4096]]);
    await withServer(startDenbd, { args: ["-f", "raw", "-t", "-r", image] }, async (server) => {
      const script = `
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
chunks = []
def chunk(subbuf, offset, status, error):
    chunks.append((offset, len(subbuf), status))
    return 0
buf = h.pread_structured(2 * 1024 * 1024, 0, chunk)
print(chunks)
print(buf[1024 * 1024] != 0, buf[0] == 0)
chunks.clear()
h.pread_structured(2 * 1024 * 1024, 0, chunk, nbd.CMD_FLAG_DF)
print(len(chunks), chunks[0][2] == nbd.READ_DATA)
`;
      const result = await python(script, [server.uri]);
      assert.equal(result.code, 0, result.stderr);
      const [chunks, contents, df] = result.stdout.trim().split("\n");
      assert.equal(chunks, "[(0, 1048576, 2), (1048576, 4096, 1), (1052672, 1044480, 2)]");
      assert.equal(contents, "True True");
      assert.equal(df, "1 True", "DF means one data chunk");
    });
  });
});

Deno.test(
  "several connections writing at once, with many requests in flight each",
  needs("nbdsh"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, 16 * MiB);
      await withServer(
        startDenbd,
        { args: ["-f", "raw", "-t", "-e", "0", image] },
        async (server) => {
          const script = `
import nbd, sys
uri = sys.argv[1]
handles = []
for _ in range(4):
    h = nbd.NBD()
    h.connect_uri(uri)
    assert h.can_multi_conn()
    handles.append(h)
# Each connection owns one 4 MiB quarter and writes it in 64 KiB pieces, 32 in flight.
for i, h in enumerate(handles):
    for k in range(64):
        h.aio_pwrite(bytes([i + 1]) * 65536, i * 4 * 1024 * 1024 + k * 65536)
while any(h.aio_in_flight() for h in handles):
    for h in handles:
        if h.aio_in_flight():
            h.poll(0)
for h in handles:
    h.flush()
check = nbd.NBD()
check.connect_uri(uri)
for i in range(4):
    data = check.pread(4 * 1024 * 1024, i * 4 * 1024 * 1024)
    assert data == bytes([i + 1]) * (4 * 1024 * 1024), i
print("ok")
`;
          const result = await python(script, [server.uri]);
          assert.equal(result.stdout.trim(), "ok", result.stderr);
        },
      );
    });
  },
);
