# syntax=docker/dockerfile:1
# Build: all dependencies, compile, then drop the dev dependencies.
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json app.ts server.ts ./
COPY lib ./lib
COPY plugins ./plugins
COPY routes ./routes
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

# Runtime: production dependencies and compiled JavaScript only, as the unprivileged node user.
FROM node:24-bookworm-slim
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
USER node
EXPOSE 3000
# slim has no curl: Node's own fetch asks /health.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# node itself, not npm, so that SIGTERM reaches the server and it can shut down gracefully.
CMD ["node", "dist/server.js"]
