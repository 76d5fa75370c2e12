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
  test: { include: ["test/**/*.test.ts"], environment: "node" },
});
