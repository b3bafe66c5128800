import assert from "node:assert/strict";
import {
  formatBytes,
  formatDuration,
  formatProgress,
  formatSummary,
  ProgressBar,
} from "../../src/copy/progress.ts";

const MiB = 2 ** 20;

Deno.test("bytes and durations are formatted for people", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(1023), "1023 B");
  assert.equal(formatBytes(1536), "1.5 KiB");
  assert.equal(formatBytes(3 * 2 ** 30), "3.0 GiB");
  assert.equal(formatDuration(0), "0:00");
  assert.equal(formatDuration(65.4), "1:05");
  assert.equal(formatDuration(3 * 3600 + 7), "3:00:07");
  assert.equal(formatDuration(Infinity), "--:--");
  assert.equal(formatDuration(NaN), "--:--");
});

Deno.test("the bar shows percent, bytes, rate and time left", () => {
  assert.equal(
    formatProgress({ done: 512 * MiB, total: 1024 * MiB, seconds: 4 }),
    " 50% [###############...............] 512.0 MiB of 1.0 GiB, 128.0 MiB/s, 0:04 left",
  );
  assert.equal(
    formatProgress({ done: 0, total: 100 * MiB, seconds: 0 }),
    "  0% [..............................] 0 B of 100.0 MiB, 0 B/s, --:-- left",
  );
  assert.match(formatProgress({ done: 99, total: 100, seconds: 1 }), /^ 99% \[#{29}\.\]/);
});

Deno.test("without a total the bar shows bytes and rate only", () => {
  assert.equal(
    formatProgress({ done: 3 * MiB, total: undefined, seconds: 2 }),
    "3.0 MiB copied, 1.5 MiB/s",
  );
});

Deno.test("the summary replaces the bar at the end", () => {
  assert.equal(
    formatSummary({ done: 64 * MiB, total: 64 * MiB, seconds: 2 }),
    "100% [##############################] 64.0 MiB copied in 0:02, 32.0 MiB/s",
  );
  assert.equal(
    formatSummary({ done: MiB, total: undefined, seconds: 1 }),
    "1.0 MiB copied in 0:01, 1.0 MiB/s",
  );
});

Deno.test("ProgressBar redraws in place, at most every 200 ms, and ends the line", () => {
  let now = 0;
  let output = "";
  const decoder = new TextDecoder();
  const bar = new ProgressBar({
    writeSync: (data) => {
      output += decoder.decode(data);
      return data.length;
    },
  }, () => now);
  bar.start(100 * MiB);
  now = 100;
  bar.advance(10 * MiB); // too soon: not drawn
  now = 1000;
  bar.advance(40 * MiB);
  now = 2000;
  bar.advance(50 * MiB);
  bar.finish(true);
  const lines = output.split("\r").slice(1);
  assert.equal(lines.length, 4, JSON.stringify(output));
  assert.match(lines[0], /^ {2}0% /);
  assert.match(lines[1], /^ 50% .* 50\.0 MiB\/s, 0:01 left$/);
  assert.match(lines[2], /^100% /);
  assert.match(lines[3], /^100% \[#{30}\] 100\.0 MiB copied in 0:02, 50\.0 MiB\/s +\n$/);
  assert.equal(lines[3].length, lines[2].length + 1, "padded over the longer bar");
});

Deno.test("a failed copy ends the bar's line without a summary, padding over nothing", () => {
  let output = "";
  const bar = new ProgressBar({
    writeSync: (data) => {
      output += new TextDecoder().decode(data);
      return data.length;
    },
  }, () => 0);
  bar.start(undefined);
  bar.finish(false);
  assert.equal(output, "\r0 B copied, 0 B/s\n");
});
