/**
 * One benchmark run's raw results as a record: every sample of every workload x server (fio) and
 * workload x copier (copy), with the run's date and conditions. `scripts/bench.ts` saves it as
 * JSON beside the run's charts, so the charts can be drawn again without measuring again
 * (`scripts/bench-chart.ts`). No I/O here: the record, its JSON and its medians.
 */

/** The tag of the JSON's format; a file with another tag is refused. */
export const RESULTS_FORMAT = "denbd-bench-results/1";

/** One fio run: IOPS (summed over jobs), server CPU µs per operation, server peak resident MiB. */
export interface FioSample {
  /** Operations per second, as fio reports them. */
  readonly iops: number;
  /** Server CPU time per operation, in microseconds. */
  readonly cpuUs: number;
  /** The server's peak resident memory during the run, in MiB. */
  readonly peakMiB: number;
}

/** One copy run: seconds for the whole command and the image size per second. */
export interface CopySample {
  /** Wall-clock seconds of the copy command. */
  readonly seconds: number;
  /** Image MiB per second. */
  readonly mibPerSec: number;
}

/** The samples of one fio workload against one server, over the rounds. */
export interface FioResult {
  /** The fio workload, e.g. `randread4k`. */
  readonly workload: string;
  /** The server, e.g. `denbd` or `qemu-nbd-tls`. */
  readonly server: string;
  /** The result table the server is reported in, e.g. `raw`, `qcow2` or `tls`. */
  readonly table: string;
  /** The server's resident MiB at rest (after start-up and one handshake). */
  readonly restMiB: number;
  /** One sample per round. */
  readonly samples: readonly FioSample[];
}

/** The samples of one copy workload with one copier, over the rounds. */
export interface CopyResult {
  /** The copy workload, e.g. `copy-nbd-to-file`. */
  readonly workload: string;
  /** The copier, `denbd` or `nbdcopy`. */
  readonly copier: string;
  /** One sample per round. */
  readonly samples: readonly CopySample[];
}

/** What a run was measured under. */
export interface RunConditions {
  /** Image size in MiB. */
  readonly imageMiB: number;
  /** fio's time per run in seconds, after the ramp. */
  readonly runtimeSec: number;
  /** fio's ramp time per run in seconds. */
  readonly rampSec: number;
  /** Rounds of every workload x server. */
  readonly rounds: number;
}

/** A whole run's results. */
export interface BenchResults {
  /** Always {@linkcode RESULTS_FORMAT}. */
  readonly format: typeof RESULTS_FORMAT;
  /** When the run started, as an ISO 8601 UTC string. */
  readonly date: string;
  /** The run's description lines (machine, versions, image, duration), as the report shows. */
  readonly info: readonly string[];
  /** Image size, run time, ramp and rounds. */
  readonly conditions: RunConditions;
  /** The fio part, in the order the report lists it (workload, then server). */
  readonly fio: readonly FioResult[];
  /** The copy part, in the order the report lists it (workload, then copier). */
  readonly copy: readonly CopyResult[];
}

/** Median of a non-empty list. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** The results as JSON text (two-space indented, ending in a newline). */
export function resultsToJson(results: BenchResults): string {
  return JSON.stringify(results, null, 2) + "\n";
}

/**
 * Reads results from JSON text, checking the format tag and the shape of every field, so that a
 * chart is never drawn from a file of another kind. Throws an Error naming what is wrong.
 */
export function resultsFromJson(text: string): BenchResults {
  const v: unknown = JSON.parse(text);
  const root = object(v, "results");
  if (root.format !== RESULTS_FORMAT) {
    throw new Error(`not a ${RESULTS_FORMAT} file (format: ${JSON.stringify(root.format)})`);
  }
  const c = object(root.conditions, "conditions");
  return {
    format: RESULTS_FORMAT,
    date: string(root.date, "date"),
    info: array(root.info, "info").map((l, i) => string(l, `info[${i}]`)),
    conditions: {
      imageMiB: number(c.imageMiB, "conditions.imageMiB"),
      runtimeSec: number(c.runtimeSec, "conditions.runtimeSec"),
      rampSec: number(c.rampSec, "conditions.rampSec"),
      rounds: number(c.rounds, "conditions.rounds"),
    },
    fio: array(root.fio, "fio").map((e, i) => {
      const r = object(e, `fio[${i}]`);
      const at = (k: string) => `fio[${i}].${k}`;
      return {
        workload: string(r.workload, at("workload")),
        server: string(r.server, at("server")),
        table: string(r.table, at("table")),
        restMiB: number(r.restMiB, at("restMiB")),
        samples: samples(r.samples, at("samples"), ["iops", "cpuUs", "peakMiB"]),
      };
    }),
    copy: array(root.copy, "copy").map((e, i) => {
      const r = object(e, `copy[${i}]`);
      const at = (k: string) => `copy[${i}].${k}`;
      return {
        workload: string(r.workload, at("workload")),
        copier: string(r.copier, at("copier")),
        samples: samples(r.samples, at("samples"), ["seconds", "mibPerSec"]),
      };
    }),
  };
}

/** A non-empty list of samples, each an object of the given number fields. */
function samples<K extends string>(
  v: unknown,
  what: string,
  keys: readonly K[],
): Record<K, number>[] {
  const list = array(v, what);
  if (list.length === 0) throw new Error(`${what}: no samples`);
  return list.map((e, i) => {
    const o = object(e, `${what}[${i}]`);
    return Object.fromEntries(keys.map((k) => [k, number(o[k], `${what}[${i}].${k}`)])) as Record<
      K,
      number
    >;
  });
}

/** `v` as a JSON object, or an error naming `what`. */
function object(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new Error(`${what}: not an object`);
  }
  return v as Record<string, unknown>;
}

/** `v` as a JSON array, or an error naming `what`. */
function array(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v)) throw new Error(`${what}: not an array`);
  return v;
}

/** `v` as a string, or an error naming `what`. */
function string(v: unknown, what: string): string {
  if (typeof v !== "string") throw new Error(`${what}: not a string`);
  return v;
}

/** `v` as a finite non-negative number, or an error naming `what`. */
function number(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
    throw new Error(`${what}: not a non-negative number`);
  }
  return v;
}
