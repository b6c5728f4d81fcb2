import '../../lambdas/core/polyfills';
