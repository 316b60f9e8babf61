// The map component: an offline basemap (country polygons from /api/basemap), switchable point
// layers, and OpenStreetMap tiles only when the user turns them on. Labels are set as text.
"use strict";

const OSM_URL = "https://tile.openstreetmap.org/{z}/{x}/{y}.png";
const LAYER_STYLE = {
  prediction: { name: "answer", color: "#d62728", radius: 9 },
  alternatives: { name: "alternatives", color: "#8e44ad", radius: 6 },
  neighbors: { name: "gallery neighbours", color: "#555555", radius: 4 },
  gps: { name: "GPS candidates", color: "#1f77b4", radius: 4 },
  vlm: { name: "VLM answers", color: "#f28e2b", radius: 6 },
  exif: { name: "EXIF GPS", color: "#2ca02c", radius: 8 },
  hints: { name: "your hints", color: "#17becf", radius: 5 },
  ok: { name: "ok", color: "#2ca02c", radius: 5 },
  degraded: { name: "degraded", color: "#f28e2b", radius: 5 },
  failed: { name: "failed", color: "#d62728", radius: 5 },
};

let basemapPromise = null;
function loadBasemap() {
  if (!basemapPromise) {
    basemapPromise = fetch("/api/basemap").then((r) => (r.ok ? r.json() : null)).catch(() => null);
  }
  return basemapPromise;
}

function textTooltip(text) {
  const span = document.createElement("span");
  span.textContent = text;
  return span;
}

class GeoMap {
  constructor(elementId) {
    this.element = document.getElementById(elementId);
    this.map = L.map(this.element, { worldCopyJump: true, minZoom: 1, zoomSnap: 0.5 }).setView([20, 0], 1.5);
    this.map.attributionControl.setPrefix("Leaflet");
    this.control = L.control.layers(null, null, { collapsed: false }).addTo(this.map);
    this.overlays = {};
    this.osm = null;
    this.basemap = null;
    loadBasemap().then((geojson) => {
      if (!geojson) return;
      this.basemap = L.geoJSON(geojson, {
        style: { color: "#8a8a8a", weight: 0.6, fillColor: "#e8e4d8", fillOpacity: 1 },
        interactive: false,
      }).addTo(this.map);
      this.basemap.bringToBack();
      this.element.dataset.basemap = String(geojson.features.length);
    });
  }

  setTiles(on) {
    if (on && !this.osm) {
      this.osm = L.tileLayer(OSM_URL, {
        maxZoom: 19, attribution: "© OpenStreetMap contributors",
      }).addTo(this.map);
    } else if (!on && this.osm) {
      this.map.removeLayer(this.osm);
      this.osm = null;
    }
    if (this.basemap) this.basemap.setStyle({ fillOpacity: on ? 0 : 1 });
  }

  // layers: {name: [{lat, lon, label, radius_km?}]}; draws each as a switchable overlay.
  setLayers(layers) {
    for (const group of Object.values(this.overlays)) {
      this.control.removeLayer(group);
      this.map.removeLayer(group);
    }
    this.overlays = {};
    const bounds = [];
    for (const [key, points] of Object.entries(layers)) {
      if (!points || !points.length) continue;
      const style = LAYER_STYLE[key] || { name: key, color: "#333", radius: 5 };
      const group = L.featureGroup();
      for (const p of points) {
        if (p.radius_km) {
          L.circle([p.lat, p.lon], { radius: p.radius_km * 1000, color: style.color, weight: 1, fillOpacity: 0.08,
            className: `gs-area gs-layer-${key}` }).addTo(group);
        }
        L.circleMarker([p.lat, p.lon], {
          radius: style.radius, color: "#ffffff", weight: 1, fillColor: style.color, fillOpacity: 0.9,
          className: `gs-marker gs-layer-${key}`,
        }).bindTooltip(textTooltip(p.label || style.name)).addTo(group);
        bounds.push([p.lat, p.lon]);
      }
      group.addTo(this.map);
      this.control.addOverlay(group, `<span style="color:${style.color}">●</span> ${style.name} (${points.length})`);
      this.overlays[key] = group;
    }
    this.bounds = bounds;
  }

  fit() {
    this.map.invalidateSize();
    if (this.bounds && this.bounds.length) {
      this.map.fitBounds(L.latLngBounds(this.bounds).pad(0.3), { maxZoom: 6, animate: false });
    } else {
      this.map.setView([20, 0], 1.5, { animate: false });
    }
  }
}

window.GeoMap = GeoMap;
