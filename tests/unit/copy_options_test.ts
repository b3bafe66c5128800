import assert from "node:assert/strict";
import { copyEnds } from "../../src/cli/copy.ts";
import { UsageError } from "../../src/cli/flags.ts";
import { scanInt, scanUnsigned } from "../../src/cli/scanf-number.ts";
import { ProgressLines, WORK_UNIT } from "../../src/copy/progress-fd.ts";

Deno.test("numbers are read as sscanf reads %u and %d", () => {
  const unsigned: [string, number | undefined][] = [
    ["4096", 4096],
    [" \t4096", 4096],
    ["+4096", 4096],
    ["4096x", 4096],
    ["64M", 64],
    ["-1", 4294967295],
    ["-5", 4294967291],
    ["4294971392", 4096],
    ["99999999999999999999999", 4294967295],
    ["", undefined],
    ["x1", undefined],
    ["- 1", undefined],
  ];
  for (const [text, value] of unsigned) assert.equal(scanUnsigned(text), value, text);
  assert.equal(scanInt("3"), 3);
  assert.equal(scanInt("-1"), -1);
  assert.equal(scanInt("2147483648"), -2147483648, "cut to an int");
  assert.equal(scanInt("abc"), undefined);
});

Deno.test("SOURCE and DESTINATION: words, or [ CMD ARGS ] up to the first ]", () => {
  assert.deepEqual(copyEnds(["a.img", "null:"]), ["a.img", "null:"]);
  assert.deepEqual(copyEnds(["[", "qemu-nbd", "-f", "qcow2", "d.qcow2", "]", "-"]), [
    { command: ["qemu-nbd", "-f", "qcow2", "d.qcow2"] },
    "-",
  ]);
  assert.deepEqual(copyEnds(["[", "a", "]", "[", "b", "1M", "]"]), [
    { command: ["a"] },
    { command: ["b", "1M"] },
  ]);
  assert.deepEqual(copyEnds(["x]", "[", "b", "]"]), ["x]", { command: ["b"] }]);
  const refused = [["a"], ["a", "b", "c"], ["[", "a", "b"], ["[", "]", "b"], ["a", "[", "]"]];
  for (const positionals of refused) {
    assert.throws(() => copyEnds(positionals), UsageError, positionals.join(" "));
  }
});

/** The lines a ProgressLines wrote. */
function recorder(): { progress: ProgressLines; lines: () => string[] } {
  let text = "";
  const progress = new ProgressLines({
    writeSync: (data) => (text += new TextDecoder().decode(data), data.length),
  });
  return { progress, lines: () => text.trimEnd().split("\n") };
}

Deno.test("--progress=FD, many requests at once: a line as each 128 MiB unit is reached", () => {
  const { progress, lines } = recorder();
  const size = 300 * 1024 * 1024;
  progress.start(size, false);
  assert.deepEqual(lines(), ["0/100", "0/100"]);
  progress.advance(WORK_UNIT - 1, true);
  assert.equal(lines().length, 2, "not yet at the second unit");
  progress.advance(1, false);
  assert.deepEqual(lines().slice(2), ["42/100"]);
  progress.advance(size - WORK_UNIT, true);
  progress.finish(true);
  assert.deepEqual(lines(), ["0/100", "0/100", "42/100", "85/100", "100/100"]);
});

Deno.test("--progress=FD in order: a line per piece of data; none after a failure", () => {
  const { progress, lines } = recorder();
  progress.start(undefined, true);
  progress.advance(65536, true);
  progress.advance(0, true);
  progress.finish(false);
  assert.deepEqual(lines(), ["0/100", "0/100"], "an unknown size is 0% throughout");
  const empty = recorder();
  empty.progress.start(0, false);
  empty.progress.finish(true);
  assert.deepEqual(empty.lines(), ["0/100", "100/100"]);
  const failing = new ProgressLines({
    writeSync: () => {
      throw new Deno.errors.BadResource("closed");
    },
  });
  failing.start(10, true);
  failing.finish(true);
});
