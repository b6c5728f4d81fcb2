/**
 * Runs a caller's reporting hook (metric, failure or mismatch callback). A faulty hook must never
 * reach the caller of a write or read: its error surfaces as a process warning instead.
 */
export function runHook(callback: () => void, warningName: string): void {
  try {
    callback();
  } catch (error) {
    try {
      process.emitWarning(error instanceof Error ? error.message : String(error), warningName);
    } catch {
      // Nothing is left to report with; the caller's result stands.
    }
  }
}
