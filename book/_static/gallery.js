/* The offline latent gallery: filters the cards of window.GALLERY_DATA (gallery-data.js).
   Plain JavaScript, no network, no libraries. */
(function () {
  "use strict";
  var data = window.GALLERY_DATA;
  var byId = function (id) { return document.getElementById(id); };
  if (!data || !data.sections || !data.sections.length) {
    byId("gallery-count").textContent = "No gallery data found (gallery-data.js is missing).";
    return;
  }

  function option(select, value, text) {
    var opt = document.createElement("option");
    opt.value = value;
    opt.textContent = text;
    select.appendChild(opt);
  }

  var sectionSelect = byId("f-section");
  data.sections.forEach(function (s, i) { option(sectionSelect, String(i), s.title); });
  var factorSelect = byId("f-factor");

  function fillFactors() {
    var section = data.sections[Number(sectionSelect.value)];
    var seen = {};
    section.latents.forEach(function (l) { seen[l.factor + "=" + l.cls] = true; });
    while (factorSelect.options.length > 1) { factorSelect.remove(1); }
    section.factors.forEach(function (f) { option(factorSelect, f, f + " (any class)"); });
    Object.keys(seen).sort().forEach(function (k) { option(factorSelect, k, k); });
  }

  function histogram(latent) {
    var max = Math.max.apply(null, latent.hist.concat([1]));
    var w = 4, h = 24, bars = "";
    latent.hist.forEach(function (c, i) {
      var bh = Math.round((c / max) * h);
      bars += '<rect x="' + i * w + '" y="' + (h - bh) + '" width="' + (w - 1) +
        '" height="' + bh + '"></rect>';
    });
    return '<svg class="gallery-hist" width="' + latent.hist.length * w + '" height="' + h +
      '" role="img" aria-label="histogram of non-zero values up to ' + latent.histMax + '">' +
      bars + "</svg>";
  }

  function card(section, latent) {
    var div = document.createElement("figure");
    div.className = "gallery-card";
    div.setAttribute("data-latent", String(latent.id));
    div.setAttribute("data-factor", latent.factor);
    var values = latent.orbitValues.slice(0, section.nShow).map(function (row, r) {
      return "<tr><td>orbit " + (r + 1) + "</td>" + row.map(function (v, p) {
        var cls = p === latent.topPose[r] ? ' class="gallery-top"' : "";
        return "<td" + cls + ">" + v.toFixed(2) + "</td>";
      }).join("") + "</tr>";
    }).join("");
    var dup = latent.dup >= 0
      ? '<div class="gallery-dup">duplicate of #' + latent.dup + " moved by element " +
        latent.dupEl + "</div>"
      : "";
    div.innerHTML =
      '<img src="' + latent.img + '" alt="top orbits and decoder atoms of latent ' + latent.id +
      '">' + "<figcaption>" +
      '<div class="gallery-title">#' + latent.id + " · " + latent.factor + ": " + latent.cls +
      "</div>" +
      '<div class="gallery-scores">precision ' + latent.prec.toFixed(2) + " · recall " +
      latent.rec.toFixed(2) + "<br>invariance " + latent.inv.toFixed(2) + " · pose sel. " +
      latent.sel.toFixed(2) + "<br>frequency " + (100 * latent.freq).toFixed(2) + "%</div>" +
      histogram(latent) +
      '<table class="gallery-values"><tbody>' + values + "</tbody></table>" + dup +
      "</figcaption>";
    return div;
  }

  function render() {
    var section = data.sections[Number(sectionSelect.value)];
    var factor = factorSelect.value;
    var minInv = Number(byId("f-inv").value) || 0;
    var minSel = Number(byId("f-sel").value) || 0;
    var minPrec = Number(byId("f-prec").value) || 0;
    var dupOnly = byId("f-dup").checked;
    var key = byId("f-sort").value;
    var shown = section.latents.filter(function (l) {
      if (factor && factor.indexOf("=") >= 0 && l.factor + "=" + l.cls !== factor) { return false; }
      if (factor && factor.indexOf("=") < 0 && l.factor !== factor) { return false; }
      if (dupOnly && l.dup < 0) { return false; }
      return l.inv >= minInv && l.sel >= minSel && l.prec >= minPrec;
    });
    shown.sort(function (a, b) { return b[key] - a[key]; });
    var cards = byId("gallery-cards");
    cards.innerHTML = "";
    shown.forEach(function (l) { cards.appendChild(card(section, l)); });
    byId("gallery-count").textContent = shown.length + " of " + section.latents.length +
      " alive latents shown (" + section.title + ")";
  }

  sectionSelect.addEventListener("change", function () { fillFactors(); render(); });
  ["f-factor", "f-inv", "f-sel", "f-prec", "f-sort", "f-dup"].forEach(function (id) {
    byId(id).addEventListener("change", render);
    byId(id).addEventListener("input", render);
  });
  fillFactors();
  render();
})();
