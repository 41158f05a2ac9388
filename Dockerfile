# Multi-stage build of the gateway: a static binary (CGO_ENABLED=0) on a
# distroless base, running as a non-root user.
#   docker build -t gateway .
#   docker run -p 1883:1883 -p 8083:8083 -p 8080:8080 -p 5683:5683/udp -v gwdata:/data gateway
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
COPY third_party ./third_party
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/gateway ./cmd/gateway \
 && mkdir -p /out/data /out/config && cp configs/gateway.yaml /out/config/gateway.yaml

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/gateway /usr/local/bin/gateway
COPY --from=build --chown=nonroot:nonroot /out/data /data
COPY --from=build /out/config /config
# Inside a container the listeners must bind every interface to be reachable;
# anonymous access stays on, so put a real config in /config before exposing it.
ENV GATEWAY_MQTT_ADDR=:1883 GATEWAY_WS_ADDR=:8083 GATEWAY_HTTP_ADDR=:8080 \
    GATEWAY_COAP_ADDR=:5683 GATEWAY_DATA_DIR=/data
EXPOSE 1883 8083 8080 5683/udp
VOLUME ["/data", "/config"]
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/gateway", "run", "-c", "/config/gateway.yaml"]
