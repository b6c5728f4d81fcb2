export * from './traffic-router';
