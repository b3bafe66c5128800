/**
 * What the benchmark reads of a server process from Linux's /proc: its process tree, the CPU time
 * the tree has used, and its resident memory now and at its peak (which can be reset, so a peak
 * covers one measurement only).
 */

/** Lists the PIDs of a process and all its live descendants. */
export function processTree(root: number): number[] {
  const parent = new Map<number, number>();
  for (const e of Deno.readDirSync("/proc")) {
    const stat = /^\d+$/.test(e.name) ? readStat(Number(e.name)) : undefined;
    if (stat) parent.set(Number(e.name), stat[3]); // field 4: ppid
  }
  const tree = [root];
  for (let i = 0; i < tree.length; i++) {
    for (const [pid, ppid] of parent) if (ppid === tree[i]) tree.push(pid);
  }
  return tree;
}

/** Returns /proc/PID/stat fields (index 0 = field 1), or undefined if the process is gone. */
function readStat(pid: number): number[] | undefined {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const rest = text.slice(text.lastIndexOf(")") + 2).split(" ").map(Number);
    return [pid, NaN, ...rest]; // fields 1 (pid) and 2 (comm) are not needed as numbers
  } catch {
    return undefined;
  }
}

/** CPU seconds used by a process tree: utime+stime (all threads) + reaped children's time. */
export function treeCpuSeconds(root: number, ticksPerSec: number): number {
  let ticks = 0;
  for (const pid of processTree(root)) {
    const f = readStat(pid);
    if (f) ticks += f[13] + f[14] + f[15] + f[16]; // fields 14..17: utime stime cutime cstime
  }
  return ticks / ticksPerSec;
}

/**
 * Resident memory of one process in MiB from /proc/PID/status: `VmRSS` now, or `VmHWM`, the peak
 * since start-up or since the last {@linkcode resetPeakResident}. Throws if the process is gone.
 */
export function residentMiB(pid: number, field: "VmRSS" | "VmHWM"): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status);
  if (!match) throw new Error(`/proc/${pid}/status has no ${field}`);
  return Number(match[1]) / 1024;
}

/** Resets a process's peak resident memory (`VmHWM`) to its current size (Linux clear_refs 5). */
export function resetPeakResident(pid: number): void {
  Deno.writeTextFileSync(`/proc/${pid}/clear_refs`, "5");
}
