
(function(){
 const me=document.currentScript, root=(me&&me.closest('.p4l-att'))||document.getElementById(%(id)s);
 if(!root) return;
 const toks=%(tokens)s, pal=%(palette)s, lv=%(levels)d, lookup=new Map();
 pal.forEach((c,i)=>{const k=c.join(','); if(!lookup.has(k)) lookup.set(k,i);});
 const tip=root.querySelector('.tip');
 root.querySelectorAll('img[data-head]').forEach(img=>{
  let px=null;
  img.addEventListener('mousemove',e=>{
   if(!px){const c=document.createElement('canvas');c.width=img.naturalWidth;c.height=img.naturalHeight;
     const x=c.getContext('2d');x.drawImage(img,0,0);px=x.getImageData(0,0,c.width,c.height).data;}
   const n=img.naturalWidth;   // offsetX/Y and clientWidth/Height exclude the border
   const k=Math.min(n-1,Math.max(0,Math.floor(e.offsetX/img.clientWidth*n))), q=Math.min(n-1,Math.max(0,Math.floor(e.offsetY/img.clientHeight*n)));
   const o=4*(q*n+k), idx=lookup.get([px[o],px[o+1],px[o+2]].join(','));
   const w=idx===255?'masked (future)':idx===undefined?'?':(idx/lv).toFixed(3);
   tip.textContent=img.dataset.head+'\nquery '+q+' '+toks[q]+'\nkey   '+k+' '+toks[k]+'\nweight '+w;
   tip.style.display='block';tip.style.left=(e.clientX+14)+'px';tip.style.top=(e.clientY+14)+'px';});
  img.addEventListener('mouseleave',()=>{tip.style.display='none';});
 });
 const box=root.querySelector('input.gqa'); if(box) box.addEventListener('change',()=>{
   root.querySelector('.grid').classList.toggle('flat',!box.checked);});
})();
