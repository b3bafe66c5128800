/**
 * The benchmark's targets (issue 12) as pure functions: which peer a denbd row is measured
 * against, the ratios, and whether each target is met. No I/O; `scripts/bench.ts` measures and
 * prints.
 */

/** denbd's IOPS must reach this multiple of the best peer's in the same table. */
export const PEER_IOPS_TARGET = 1;
/** denbd's server CPU time per operation must not exceed this multiple of the CPU peer's. */
export const PEER_CPU_TARGET = 1;
/** `denbd copy`'s throughput must reach this multiple of nbdcopy's. */
export const COPY_TARGET = 1;

/** The medians of one server on one workload: IOPS and server CPU µs per operation. */
export interface Medians {
  /** Operations per second, as fio reports them (summed over jobs). */
  readonly iops: number;
  /** Server CPU time per operation, in microseconds. */
  readonly cpuUs: number;
}

/** What a result table checks on denbd's row of each workload. */
export interface TableRule {
  /** The denbd server of the table (its row carries the checks). */
  readonly mine: string;
  /** The peers of the table; the best IOPS among those that ran is the reference. */
  readonly iopsPeers: readonly string[];
  /** The peer whose CPU per operation denbd must not exceed, if the table has one. */
  readonly cpuPeer?: string;
  /** Another denbd server (in another table) whose IOPS `mine` must reach `min` times. */
  readonly vsOwn?: { readonly server: string; readonly min: number };
}

/** One target on a denbd row: the reference, the measured ratio and the bound it must keep. */
export interface Check {
  /** What is compared. */
  readonly measure: "IOPS" | "CPU/op" | "MiB/s";
  /** The server or copier compared with. */
  readonly reference: string;
  /** denbd's value divided by the reference's. */
  readonly ratio: number;
  /** The bound on `ratio`: a minimum, or for CPU/op a maximum. */
  readonly bound: number;
}

/** Whether a check is met: CPU per operation at most its bound, anything else at least. */
export function passes(check: Check): boolean {
  return check.measure === "CPU/op" ? check.ratio <= check.bound : check.ratio >= check.bound;
}

/**
 * The checks of denbd's row on one workload, given the medians of every server that ran it
 * (by name): IOPS against the best peer that ran, CPU per operation against the CPU peer and IOPS
 * against the other denbd server, each left out when its reference did not run.
 */
export function fioChecks(rule: TableRule, medians: ReadonlyMap<string, Medians>): Check[] {
  const mine = medians.get(rule.mine);
  if (!mine) return [];
  const checks: Check[] = [];
  const peers = rule.iopsPeers.filter((p) => medians.has(p));
  if (peers.length > 0) {
    const best = peers.reduce((a, b) => medians.get(b)!.iops > medians.get(a)!.iops ? b : a);
    const ratio = mine.iops / medians.get(best)!.iops;
    checks.push({ measure: "IOPS", reference: best, ratio, bound: PEER_IOPS_TARGET });
  }
  const cpuPeer = rule.cpuPeer === undefined ? undefined : medians.get(rule.cpuPeer);
  if (cpuPeer) {
    const ratio = mine.cpuUs / cpuPeer.cpuUs;
    checks.push({ measure: "CPU/op", reference: rule.cpuPeer!, ratio, bound: PEER_CPU_TARGET });
  }
  const own = rule.vsOwn && medians.get(rule.vsOwn.server);
  if (own) {
    const ratio = mine.iops / own.iops;
    checks.push({ measure: "IOPS", reference: rule.vsOwn!.server, ratio, bound: rule.vsOwn!.min });
  }
  return checks;
}

/** PASS when every check is met, FAIL when one is not, n/a without checks (no reference ran). */
export function verdict(checks: readonly Check[]): "PASS" | "FAIL" | "n/a" {
  if (checks.length === 0) return "n/a";
  return checks.every(passes) ? "PASS" : "FAIL";
}

/** A check in words, e.g. `IOPS 1.05x nbdkit (>= 1)` or `CPU/op 1.41x nbdkit (<= 1)`. */
export function describeCheck(check: Check): string {
  const sign = check.measure === "CPU/op" ? "<=" : ">=";
  return `${check.measure} ${check.ratio.toFixed(2)}x ${check.reference} (${sign} ${check.bound})`;
}

/** A table's targets in one line, e.g. `denbd: IOPS >= 1 x best of qemu-nbd, nbdkit; ...`. */
export function describeRule(rule: TableRule): string {
  const parts = [`IOPS >= ${PEER_IOPS_TARGET} x best of ${rule.iopsPeers.join(", ")}`];
  if (rule.cpuPeer) parts.push(`CPU/op <= ${PEER_CPU_TARGET} x ${rule.cpuPeer}`);
  if (rule.vsOwn) parts.push(`IOPS >= ${rule.vsOwn.min} x ${rule.vsOwn.server}`);
  return `${rule.mine}: ${parts.join("; ")}`;
}
