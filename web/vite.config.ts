/// <reference types="vitest/config" />
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// `npm run build` writes the app into the Python package, which ships it as package data.
export default defineConfig({
  plugins: [react()],
  base: "./",
  build: {
    outDir: "../src/idlsec/lab/static",
    emptyOutDir: true,
    chunkSizeWarningLimit: 1000,
  },
  server: { proxy: { "/api": "http://127.0.0.1:8765" } },
  test: { include: ["src/**/*.test.{ts,tsx}"], environment: "node" },
});
