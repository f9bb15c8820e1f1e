# syntax=docker/dockerfile:1
# pubgate: multi-stage build on Debian slim (uWebSockets.js needs glibc; the
# build and runtime stages use the same image, so the same Node.js ABI).
#   docker build -t pubgate .
#   docker run --rm -p 8080:8080 -p 127.0.0.1:9091:9091 \
#     -e PUBGATE_JWT_SECRETS=... -e PUBGATE_API_KEYS=... -e PUBGATE_REDIS_URL=redis://redis:6379 pubgate
# More in docs/deploy.md.

ARG NODE_IMAGE=node:22-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
# uWebSockets.js ships binaries for every platform and Node.js ABI (~130 MB):
# keep only the one this image loads, and fail the build if it does not load.
# build:server: the gateway and its console (the client SDK in packages/ is not in the image).
RUN npm run build:server \
 && npm prune --omit=dev --no-audit --no-fund \
 && node -e "const fs=require('fs'),d='node_modules/uWebSockets.js/dist/bin',keep='uws_'+process.platform+'_'+process.arch+'_'+process.versions.modules+'.node';if(!fs.existsSync(d+'/'+keep))throw new Error('no uWS binary '+keep);for(const f of fs.readdirSync(d))if(f!==keep)fs.rmSync(d+'/'+f)" \
 && node --input-type=module -e "await import('uWebSockets.js')"

FROM ${NODE_IMAGE}
ENV NODE_ENV=production
WORKDIR /app
# Root-owned and read-only for the process: it runs as the image's `node`
# user, given by number so Kubernetes' runAsNonRoot can verify it.
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
USER 1000:1000
# 8080: WebSocket /ws and publish API /v1/* (PUBGATE_PORT)
# 9091: /metrics, /healthz, /readyz (PUBGATE_ADMIN_PORT): never publish it to the internet
EXPOSE 8080 9091
# Liveness only (/healthz); readiness (/readyz) is for load balancers.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PUBGATE_ADMIN_PORT||9091)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# SIGTERM drains (readiness 503, 1001 closes spread over PUBGATE_DRAIN_SECONDS,
# in-flight publishes get 4 s more), then exits 0: give `docker stop -t` /
# stop_grace_period / terminationGracePeriodSeconds more than that.
STOPSIGNAL SIGTERM
CMD ["node", "dist/main.js"]
