# syntax=docker/dockerfile:1
# pubgate: multi-stage build on Debian slim (uWebSockets.js needs glibc).
#   docker build -t pubgate .
#   docker run --rm -p 8080:8080 -p 9091:9091 \
#     -e PUBGATE_JWT_SECRETS=... -e PUBGATE_API_KEYS=... -e PUBGATE_REDIS_URL=redis://redis:6379 pubgate

FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build --chown=node:node /app/node_modules ./node_modules
COPY --from=build --chown=node:node /app/dist ./dist
COPY --chown=node:node package.json ./
USER node
EXPOSE 8080 9091
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PUBGATE_ADMIN_PORT||9091)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# SIGTERM drains (readiness 503, 1001 closes spread over PUBGATE_DRAIN_SECONDS), then exits 0.
STOPSIGNAL SIGTERM
CMD ["node", "dist/main.js"]
