/**
 * The copy's progress bar: percent, a bar, bytes done, the average rate and
 * the time left, redrawn in place (carriage return, no terminal escapes) at
 * most a few times a second, and finished with a summary line. Without a
 * known total (a stream source) it shows the bytes done and the rate.
 * Formatting is pure and separate from drawing.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatProgress } from "./progress.ts";
 * assert.equal(
 *   formatProgress({ done: 512 * 2 ** 20, total: 2 ** 30, seconds: 4 }),
 *   " 50% [###############...............] 512.0 MiB of 1.0 GiB, 128.0 MiB/s, 0:04 left",
 * );
 * ```
 * @module
 */

/** Receives the progress of a copy. */
export interface ProgressReporter {
  /**
   * The copy starts; `total` is the source's size (undefined for a stream);
   * `inOrder` when it goes one request at a time, from start to end.
   */
  start(total: number | undefined, inOrder: boolean): void;
  /** `bytes` more of the source are done: copied (`data`) or zeroed. */
  advance(bytes: number, data: boolean): void;
  /** The copy ended (`completed` false when it failed). */
  finish(completed: boolean): void;
}

/** Where a copy stands. */
export interface ProgressSnapshot {
  /** Bytes of the source done. */
  readonly done: number;
  /** The source's size, when known. */
  readonly total: number | undefined;
  /** Seconds since the copy started. */
  readonly seconds: number;
}

/** Characters of the bar between its brackets. */
const BAR_WIDTH = 30;
/** Shortest time between two redraws, in milliseconds. */
const REDRAW_INTERVAL_MS = 200;
/** Units of byte counts, each 1024 times the one before. */
const BYTE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/** `bytes` with a binary unit and one decimal, e.g. "1.5 GiB"; whole bytes below 1 KiB ("333 B"). */
export function formatBytes(bytes: number): string {
  let unit = 0;
  let value = bytes;
  while (value >= 1024 && unit < BYTE_UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${Math.round(value)} B` : `${value.toFixed(1)} ${BYTE_UNITS[unit]}`;
}

/** A duration as M:SS or H:MM:SS; "--:--" when it cannot be told. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "--:--";
  const whole = Math.round(seconds);
  const [hours, minutes, secs] = [
    Math.floor(whole / 3600),
    Math.floor(whole / 60) % 60,
    whole % 60,
  ];
  const two = (n: number) => String(n).padStart(2, "0");
  return hours > 0 ? `${hours}:${two(minutes)}:${two(secs)}` : `${minutes}:${two(secs)}`;
}

/** The line showing `snapshot` while the copy runs. */
export function formatProgress(snapshot: ProgressSnapshot): string {
  const { done, total, seconds } = snapshot;
  const rate = seconds > 0 ? done / seconds : 0;
  const speed = `${formatBytes(rate)}/s`;
  if (total === undefined) return `${formatBytes(done)} copied, ${speed}`;
  const fraction = total > 0 ? Math.min(1, done / total) : 1;
  const filled = Math.floor(fraction * BAR_WIDTH);
  const bar = "#".repeat(filled) + ".".repeat(BAR_WIDTH - filled);
  const percent = `${Math.floor(fraction * 100)}%`.padStart(4);
  const left = formatDuration(rate > 0 ? (total - done) / rate : NaN);
  return `${percent} [${bar}] ${formatBytes(done)} of ${
    formatBytes(total)
  }, ${speed}, ${left} left`;
}

/** The line that replaces the bar once the copy has completed. */
export function formatSummary(snapshot: ProgressSnapshot): string {
  const { done, total, seconds } = snapshot;
  const rate = seconds > 0 ? done / seconds : 0;
  const bar = total === undefined ? "" : `100% [${"#".repeat(BAR_WIDTH)}] `;
  return `${bar}${formatBytes(done)} copied in ${formatDuration(seconds)}, ` +
    `${formatBytes(rate)}/s`;
}

/** Something a line of text can be written to at once (Deno.stderr). */
export interface TextSink {
  /** Write some of `data`; the count written. */
  writeSync(data: Uint8Array): number;
}

/** A progress bar drawn on `sink` (a terminal, usually standard error). */
export class ProgressBar implements ProgressReporter {
  readonly #sink: TextSink;
  readonly #now: () => number;
  readonly #encoder = new TextEncoder();
  #total: number | undefined;
  #done = 0;
  #startedAt = 0;
  #drawnAt = -Infinity;
  #drawnLength = 0;

  /** Draw on `sink`; `now` (milliseconds) is for tests. */
  constructor(sink: TextSink, now: () => number = () => performance.now()) {
    this.#sink = sink;
    this.#now = now;
  }

  /** Remember the total and draw 0%. */
  start(total: number | undefined): void {
    this.#total = total;
    this.#startedAt = this.#now();
    this.#draw(formatProgress(this.#snapshot()));
  }

  /** Count `bytes` more; redraw unless the last redraw was very recent. */
  advance(bytes: number): void {
    this.#done += bytes;
    if (this.#now() - this.#drawnAt >= REDRAW_INTERVAL_MS) {
      this.#draw(formatProgress(this.#snapshot()));
    }
  }

  /** Draw the summary when `completed`, then end the line either way. */
  finish(completed: boolean): void {
    if (completed) this.#draw(formatSummary(this.#snapshot()));
    this.#write("\n");
  }

  #snapshot(): ProgressSnapshot {
    return {
      done: this.#done,
      total: this.#total,
      seconds: (this.#now() - this.#startedAt) / 1000,
    };
  }

  /** Replace the line on screen with `line` (padding over a longer previous one). */
  #draw(line: string): void {
    this.#drawnAt = this.#now();
    this.#write(`\r${line.padEnd(this.#drawnLength)}`);
    this.#drawnLength = line.length;
  }

  #write(text: string): void {
    const bytes = this.#encoder.encode(text);
    for (let done = 0; done < bytes.length;) done += this.#sink.writeSync(bytes.subarray(done));
  }
}
