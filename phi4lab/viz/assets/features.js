(function(){
 const me=document.currentScript, root=me&&me.closest('.p4f');
 if(!root) return;
 const box=root.querySelector('input.search'), rows=root.querySelectorAll('tr[data-latent]'), n=%(count)s;
 if(!box||rows.length!==n) return;
 box.addEventListener('input',()=>{
  const q=box.value.trim().toLowerCase();
  rows.forEach(r=>{r.style.display=(!q||r.dataset.latent===q||r.textContent.toLowerCase().includes(q))?'':'none';});
 });
})();
