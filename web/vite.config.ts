import { defineConfig } from "vitest/config";

// The FastAPI app serves the build from the Python package (src/labelloop/server/web.py).
export default defineConfig({
  build: {
    outDir: "../src/labelloop/server/web_dist",
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
    chunkSizeWarningLimit: 1000,
  },
  server: { proxy: { "/api": "http://127.0.0.1:8000" } },
  // 30 s per test: the RLE round trips over real masks take seconds on a loaded 2-core machine (5 s timed out there).
  test: { include: ["test/**/*.test.ts"], environment: "node", testTimeout: 30000 },
});
