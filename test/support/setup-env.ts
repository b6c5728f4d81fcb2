// The time zone (UTC) is set in jest.config.js, where it reaches the workers' processes.
import '../../lambdas/core/polyfills';
