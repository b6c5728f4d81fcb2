// node-postgres reads `timestamp without time zone` as local time; V1 holds UTC.
process.env.TZ = 'UTC';
import '../../lambdas/core/polyfills';
