// Where to put a text label so that it covers no data point (pure: unit-tested in test/place.test.js).

/**
 * Pick the candidate box farthest from every point.
 * @param {Array<[number, number]>} points data points (px)
 * @param {Array<{x:number, y:number}>} candidates top-left corners of the label box (px)
 * @param {number} w label width (px)
 * @param {number} h label height (px)
 * @param {{w:number, h:number}} [area] the drawing area: boxes outside it are skipped
 * @returns {{x:number, y:number, clearance:number}} the chosen corner and its distance to the nearest point
 */
export function placeLabel(points, candidates, w, h, area) {
  let best = null;
  for (const c of candidates) {
    if (area && (c.x < 0 || c.y < 0 || c.x + w > area.w || c.y + h > area.h)) continue;
    let clearance = Infinity;
    for (const [px, py] of points) {
      const dx = Math.max(c.x - px, 0, px - (c.x + w));
      const dy = Math.max(c.y - py, 0, py - (c.y + h));
      clearance = Math.min(clearance, Math.hypot(dx, dy));
    }
    if (!best || clearance > best.clearance) best = { x: c.x, y: c.y, clearance };
  }
  return best || { x: 0, y: 0, clearance: 0 };
}

/**
 * Label corners around a circle (centre cx, cy; radius r px): just outside it at eight angles, then
 * the four corners of the drawing area as a last resort.
 */
export function circleLabelCandidates(cx, cy, r, w, h, area) {
  const out = [];
  for (let k = 0; k < 8; k++) {
    const a = (Math.PI / 4) * k + Math.PI / 8;
    const ex = cx + Math.cos(a) * (r + 3), ey = cy - Math.sin(a) * (r + 3);
    out.push({ x: Math.cos(a) >= 0 ? ex : ex - w, y: Math.sin(a) >= 0 ? ey - h : ey });
  }
  if (area) for (const [x, y] of [[4, 16], [area.w - w - 4, 4], [4, area.h - h - 4], [area.w - w - 4, area.h - h - 4]]) out.push({ x, y });
  return out;
}
