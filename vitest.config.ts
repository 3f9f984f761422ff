import { defineConfig } from 'vitest/config'

// Four projects (TESTING.md): unit (no network), integration (real libp2p + level in one
// process), e2e (the CLI driving daemons in separate processes), faults (processes in network
// namespaces through partitions and kill -9: test/faults/). `npm test` runs them all.
export default defineConfig({
  test: {
    setupFiles: ['./src/lib/polyfill.ts'],
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/**/*.test.ts'], exclude: ['test/**/*.int.test.ts', 'test/e2e/**', 'test/faults/**'], testTimeout: 20_000 } },
      { extends: true, test: { name: 'integration', include: ['test/**/*.int.test.ts'], exclude: ['test/e2e/**', 'test/faults/**'], testTimeout: 60_000, hookTimeout: 60_000 } },
      { extends: true, test: { name: 'e2e', include: ['test/e2e/**/*.test.ts'], globalSetup: ['./test/e2e/global-setup.ts'], testTimeout: 120_000, hookTimeout: 60_000, fileParallelism: false } },
      { extends: true, test: { name: 'faults', include: ['test/faults/**/*.test.ts'], globalSetup: ['./test/faults/setup.ts'], testTimeout: 600_000, hookTimeout: 180_000, fileParallelism: false } }
    ]
  }
})
