/** Phase 3: verification and repair (see checksums.ts for how windows are compared). */
export {
  checkWindows,
  type SliceResult,
  type VerifyDeps,
  type WindowResult,
  type WindowSums,
} from './checksums';
export {
  MIN_WINDOWS_PER_SLICE,
  startVerification,
  verificationProgress,
  verifySlice,
  type StartOptions,
  type VerificationProgress,
} from './runs';
export {
  compareKeys,
  explainWindow,
  sampleCompare,
  type RowDifference,
  type SampleDifference,
  type WindowMismatch,
} from './row-diff';
export {
  buildReport,
  finishVerification,
  runTotals,
  type TableTotals,
  type VerificationReport,
} from './report';
export { repairRun, repairWindow } from './repair';
export { repairRunFromV2, repairWindowFromV2 } from './repair-reverse';
export { touchedWindowsInV2 } from './touched-v2';
export {
  concludeRun,
  DEFAULT_RECHECK_DELAY_MS,
  recheckInFlight,
  verificationFailure,
  type ConcludeOptions,
} from './conclude';
export { verifyTouchedWindows } from './drift';
